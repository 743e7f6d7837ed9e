"""``dscoder-generate``: see :mod:`megatron_dscoder.evaluation.generate` (``--help`` shows
its usage)."""

import sys

from megatron_dscoder.evaluation.generate import main

if __name__ == "__main__":
    sys.exit(main())
