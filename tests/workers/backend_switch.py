"""Checkpoints across the local spec and the Transformer Engine spec, both ways (one process).

    python tests/workers/backend_switch.py OUT_DIR    # writes OUT_DIR/results.json

TE cannot run on a CPU, so its modules are emulated where they change a checkpoint: each module
that ``te_spec.extra_state_modules()`` derives from megatron-core's TE spec gets TE's
extra-state interface (``get_extra_state`` returns a byte tensor, as TE's FP8 metadata does;
``set_extra_state`` records what it is given). megatron-core's own sharded-state-dict code then
produces exactly the keys a TE model has, and the real save and load paths run on them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from te_spec import extra_state_modules

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing import distopt_state, extra_state
from megatron_dscoder.config import cli as arguments
from megatron_dscoder.parallel import distributed
from megatron_dscoder.training.build import (
    build_model_chunks,
    build_optimizer,
    build_transformer_config,
)

BLOB = torch.tensor(list(b"fp8-scaling-metadata"), dtype=torch.uint8)


class Emulation:
    """Turns the TE positions of a local-spec GPTModel into modules with TE's extra state."""

    def __init__(self, gpt: torch.nn.Module) -> None:
        self.received: dict[str, str] = {}
        self.modules: dict[str, torch.nn.Module] = {}
        layers = len(gpt.decoder.layers)
        for path in extra_state_modules():
            if path.startswith("decoder.layers."):
                rest = path.removeprefix("decoder.layers.")
                for i in range(layers):
                    name = f"decoder.layers.{i}.{rest}"
                    self.modules[name] = gpt.get_submodule(name)
            else:
                self.modules[path] = gpt.get_submodule(path)
        self.local = {name: type(m) for name, m in self.modules.items()}

    def on(self) -> None:
        received = self.received
        for name, module in self.modules.items():

            def set_extra_state(self, state, name=name) -> None:
                received[name] = "None" if state is None else bytes(state.tolist()).decode()

            base = self.local[name]
            module.__class__ = type(
                "TE" + base.__name__,
                (base,),
                {"get_extra_state": lambda self: BLOB.clone(), "set_extra_state": set_extra_state},
            )

    def off(self) -> None:
        for name, module in self.modules.items():
            module.__class__ = self.local[name]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    out = Path(sys.argv[1])
    flags = "--model debug --mock-data --seq-length 32 --global-batch-size 2 --bf16"
    _, run = arguments.parse([*flags.split(), "--use-distributed-optimizer"], 1)
    distributed.initialize(run.parallel, run.train.seed)
    model = build_model_chunks(run, build_transformer_config(run))
    optimizer = build_optimizer(run, model)
    distopt_state.allocate_state(optimizer)
    gpt = checkpointing.unwrap(model[0])
    te = Emulation(gpt)
    saved = {k: v.clone() for k, v in gpt.state_dict().items() if torch.is_tensor(v)}
    logs = Records()
    logging.getLogger(extra_state.__name__).addHandler(logs)
    logging.getLogger(extra_state.__name__).setLevel(logging.INFO)
    meta = {"arch": {}, "run_id": "switch"}
    results: dict[str, object] = {"te_modules": sorted(te.modules)}

    def save(name: str) -> Path:
        checkpointing.save_checkpoint(
            out / name, iteration=1, model=model, optimizer=optimizer, run_meta=meta
        )
        return checkpointing.iteration_dir(out / name, 1)

    def load(ckpt: Path) -> dict[str, object]:
        for p in gpt.parameters():  # the load must put every weight back
            p.data.add_(1.0)
        te.received.clear()
        logs.lines.clear()
        try:
            checkpointing.load_checkpoint(ckpt, model=model, optimizer=optimizer)
        except checkpointing.CheckpointError as err:
            return {"error": str(err)}
        state = gpt.state_dict()
        return {
            "weights_equal": all(torch.equal(state[k], v) for k, v in saved.items()),
            "received": dict(te.received),
            "log": list(logs.lines),
        }

    def objects(ckpt: Path) -> list[str]:
        return sorted(k for k in extra_state.checkpoint_objects(ckpt) if "_extra_state" in k)

    local_ckpt = save("local")
    te.on()
    te_ckpt = save("te")
    results["local_objects"], results["te_objects"] = objects(local_ckpt), objects(te_ckpt)
    results["local_to_te"] = load(local_ckpt)
    results["te_to_te"] = load(te_ckpt)
    align = extra_state.align
    extra_state.align = lambda model_sd, saved, ckpt_dir: model_sd  # as before the handling
    results["local_to_te_unaligned"] = load(local_ckpt)
    extra_state.align = align
    te.off()
    results["te_to_local"] = load(te_ckpt)
    results["local_to_local"] = load(local_ckpt)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    distributed.destroy()


if __name__ == "__main__":
    main()
