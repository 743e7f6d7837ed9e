"""The model under evaluation: anything with ``complete`` and ``infill`` (:class:`CodeModel`), so
the harnesses are tested with stand-ins as well as run on real exports; :func:`load_hf_model`
wraps an HF export in :class:`~megatron_dscoder.evaluation.generate.Generator`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from megatron_dscoder.evaluation.generate import Generator


class CodeModel(Protocol):
    """What the harness needs from a model."""

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str: ...

    def infill(
        self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]
    ) -> str: ...


@dataclass(frozen=True)
class HFCodeModel:
    """An HF export through generate.py's :class:`Generator`, with fixed sampling settings."""

    generator: Generator
    temperature: float = 0.0

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return self.generator.complete(
            prompt, max_new_tokens=max_new_tokens, stop=stop, temperature=self.temperature
        )

    def infill(self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return self.generator.infill(
            prefix, suffix, max_new_tokens=max_new_tokens, stop=stop, temperature=self.temperature
        )


def load_hf_model(
    model_dir: str, *, temperature: float, dtype: str, bos: bool | None = None
) -> CodeModel:
    """``bos`` None: prompts start with BOS as the model was trained
    (:func:`megatron_dscoder.evaluation.generate.model_bos`)."""
    import torch

    return HFCodeModel(Generator(model_dir, dtype=getattr(torch, dtype), add_bos=bos), temperature)
