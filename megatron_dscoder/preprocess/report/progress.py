"""The progress bar of a run: input bytes on stderr, with documents/s and text MB/s."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """A tqdm bar on stderr over input bytes, with documents/s and text MB/s."""

    def __init__(self, desc: str, total: int, enabled: bool = True) -> None:
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        self.start = time.perf_counter()
        self.documents = 0
        self.text_bytes = 0

    def update(self, input_bytes: int, documents: int, text_bytes: int) -> None:
        self.documents += documents
        self.text_bytes += text_bytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(
            docs_s=f"{self.documents / elapsed:,.0f}",
            text_MB_s=f"{self.text_bytes / elapsed / 1e6:.2f}",
            refresh=False,
        )
        self.bar.update(input_bytes)

    def close(self) -> None:
        self.bar.close()
