"""What the trainer reads: megatron-core ``GPTDataset`` blends over MMIDIDX prefixes (``gpt.py``),
packed instruction samples with a response-only loss mask (``sft.py``), and deterministic
synthetic tokens (``mock.py``). The on-disk formats themselves live in ``data/``."""
