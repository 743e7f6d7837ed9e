"""Process groups, and megatron-core's CUDA code paths made to run on CPU."""
