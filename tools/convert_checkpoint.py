"""``dscoder-convert``: see :mod:`megatron_dscoder.convert.cli` (``--help`` shows its usage)."""

import sys

from megatron_dscoder.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
