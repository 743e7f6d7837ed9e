"""On-disk data formats shared by preprocessing and training (Megatron's MMIDIDX)."""
