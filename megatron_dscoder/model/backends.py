"""The attention backends a run may choose (``--attention-backend``), in a module that imports
nothing: the config room lists them as flag choices without loading torch, and
:mod:`megatron_dscoder.model.attention` resolves them."""

ATTENTION_BACKENDS = ("auto", "transformer_engine", "flash", "sdpa", "unfused")
"""``auto`` picks Transformer Engine when it and CUDA are present, else ``sdpa``."""
