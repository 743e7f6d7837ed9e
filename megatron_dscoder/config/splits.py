"""How a run is cut: ``--split`` train/valid/test proportions, and the decoder layers of each
pipeline stage (Megatron's ``--decoder-first/last-pipeline-num-layers``). Plain arithmetic,
checked, shared by the config, the datasets and the converter."""

from __future__ import annotations

import math

from megatron_dscoder.config.flags import ConfigError


def parse_split(split: str) -> tuple[float, float, float]:
    """``"99,1,0"`` -> (0.99, 0.01, 0.0): train/valid/test proportions, Megatron's syntax."""
    parts = [p.strip() for p in split.replace("/", ",").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--split {split!r}: expected three numbers like 99,1,0") from None
    if len(values) > 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"--split {split!r}: expected up to three non-negative numbers")
    values += [0.0] * (3 - len(values))
    total = sum(values)
    if total <= 0:
        raise ConfigError(f"--split {split!r}: the proportions add up to 0")
    train, valid, test = (v / total for v in values)
    return train, valid, test


def split_pipeline_layers(
    num_layers: int, pp: int, first: int | None = None, last: int | None = None
) -> tuple[int | None, int | None]:
    """Layers on the first and last pipeline stage (``None`` = even split).

    When ``num_layers`` does not divide evenly, the middle stages take ``ceil(L / pp)`` layers and
    the first and last stages (which also hold the embedding and the output layer + loss) share the
    rest: 62 layers over PP=4 -> 15, 16, 16, 15.
    """
    if pp == 1:
        if first is not None or last is not None:
            raise ConfigError("first/last pipeline stage layer counts need pipeline parallelism")
        return None, None
    if first is None and last is None:
        if num_layers % pp == 0:
            return None, None
        if pp == 2:
            raise ConfigError(
                f"num_layers={num_layers} cannot be split over pipeline-model-parallel-size={pp}"
            )
        per_stage = math.ceil(num_layers / pp)
        rest = num_layers - per_stage * (pp - 2)
        first, last = rest // 2, rest - rest // 2
        if first < 1:
            raise ConfigError(
                f"num_layers={num_layers} is too few for pipeline-model-parallel-size={pp}"
            )
        return first, last
    first = first if first is not None else 0
    last = last if last is not None else 0
    middle_stages = pp - (first > 0) - (last > 0)
    middle_layers = num_layers - first - last
    if middle_layers < 0 or (middle_stages and middle_layers % middle_stages):
        raise ConfigError(
            f"num_layers={num_layers} with {first} on the first and {last} on the last stage "
            f"leaves {middle_layers} layers for {middle_stages} stages of "
            f"pipeline-model-parallel-size={pp}"
        )
    return first or None, last or None
