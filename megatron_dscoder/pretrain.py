"""``python -m megatron_dscoder.pretrain``: the stable launch name of :mod:`.training.train`."""

import sys

from megatron_dscoder.training.train import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    sys.exit(cli())
