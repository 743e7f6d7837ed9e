"""Raw code corpus -> Megatron ``PREFIX.bin``/``.idx`` (``dscoder-preprocess``; see --help)."""

from megatron_dscoder.preprocess.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
