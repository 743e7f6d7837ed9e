"""A manifest of dataset parts: ``PREFIX.parts/manifest.json``, readable as a training blend.

A preprocessing run with ``--output-shard-mb`` writes its output as parts (``part-NNNNN.bin/
.idx``, each a complete Megatron indexed dataset) instead of one merged pair, and lists them::

    {"format": "megatron-dscoder-manifest", "version": 1, "dtype": "uint16",
     "parts": [{"prefix": "part-00000", "tokens": 1048213}, ...]}

Prefixes are relative to the manifest's directory. Training takes the manifest path as
``--data-path PREFIX.parts/manifest.json``; :func:`blend_from_manifest` turns it into Megatron's
blend,
each part weighted by its tokens, so sampling matches one merged dataset;
:func:`blend_args` gives the same as a ``W1 P1 W2 P2 ...`` list for any Megatron launcher.
"""

from __future__ import annotations

import json
import os
from typing import Any

FORMAT = "megatron-dscoder-manifest"


def write_manifest(path: str, dtype: str, parts: list[dict[str, Any]]) -> None:
    """Write the manifest under a temporary name and rename it into place."""
    document = {"format": FORMAT, "version": 1, "dtype": dtype, "parts": parts}
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(document, f, indent=1)
    os.replace(partial, path)


def is_manifest(path: str) -> bool:
    return path.endswith(".json")


def blend_from_manifest(path: str) -> tuple[list[str], list[float]]:
    """(absolute prefixes, token weights) of a manifest's non-empty parts."""
    try:
        with open(path) as f:
            document = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"--data-path {path}: not a readable manifest ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"--data-path {path}: not a {FORMAT} file")
    root = os.path.dirname(os.path.abspath(path))
    parts = [p for p in document["parts"] if p["tokens"] > 0]
    if not parts:
        raise ValueError(f"--data-path {path}: the manifest lists no tokens")
    return [os.path.join(root, p["prefix"]) for p in parts], [float(p["tokens"]) for p in parts]


def blend_args(path: str) -> list[str]:
    """The manifest as Megatron's ``--data-path W1 P1 W2 P2 ...`` list."""
    prefixes, weights = blend_from_manifest(path)
    return [
        x for weight, prefix in zip(weights, prefixes, strict=True) for x in (f"{weight:g}", prefix)
    ]
