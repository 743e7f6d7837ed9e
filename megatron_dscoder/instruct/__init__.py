"""Instruction data: DeepSeek-Coder-Instruct's chat template (:mod:`.template`), conversations
encoded with response-only loss masks (:mod:`.encode`), and ``dscoder-preprocess-sft``
(:mod:`.cli`)."""
