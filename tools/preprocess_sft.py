"""Instruction data -> Megatron token ids + loss masks (``dscoder-preprocess-sft``; see --help)."""

from megatron_dscoder.instruct.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
