"""Training a DeepSeek-Coder-style tokenizer (:mod:`.train`) and its entry point
``dscoder-train-tokenizer`` (:mod:`.cli`)."""
