"""The model: the size registry, the megatron-core GPTModel builder, weight init and FLOPs."""
