"""Read the history of an offline W&B run (``run-*.wandb``), to check what a run logged.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks
of records (crc32, uint16 length, uint8 type: 1 full, 2 first, 3 middle, 4 last) whose payloads
are ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
from pathlib import Path

_BLOCK = 32 * 1024


def records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        if kind == 1:
            out.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            out.append(pending + payload)
    return out


def history(run_dir: Path) -> list[dict]:
    """Logged rows (``{"_step": .., key: value}``) of the offline run under ``run_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    rows = []
    for payload in records(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return rows
