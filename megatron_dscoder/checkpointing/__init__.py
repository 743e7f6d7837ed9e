"""Checkpoints on disk: megatron-core's torch_dist save and load, the distributed optimizer's
layouts (``formats.py``), background saves, the checksum manifest, restricted unpickling, and
Transformer Engine's extra state across layer specs. One concern per module; ``checkpoint.py``
is the API the trainer and the converter call."""
