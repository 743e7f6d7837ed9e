"""``dscoder-eval-humaneval``: see :mod:`megatron_dscoder.evaluation.humaneval` (``--help`` shows
its usage)."""

import sys

from megatron_dscoder.evaluation.humaneval import main

if __name__ == "__main__":
    sys.exit(main())
