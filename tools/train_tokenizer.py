"""Train DeepSeek-Coder's tokenizer (``dscoder-train-tokenizer``; see --help)."""

from megatron_dscoder.preprocess.tokenizer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
