"""A checkpoint loads across layer specs, local <-> Transformer Engine, in both directions.

TE cannot run on a CPU: the modules of megatron-core's TE spec that save an ``_extra_state``
are derived from megatron-core's sources (``tests/workers/te_spec.py``) and emulated at their
positions in a local-spec model, so megatron-core's own code writes and asks for a TE model's
keys (``tests/workers/backend_switch.py``). The real save and load run on them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.launch import REPO, WORKERS

LINEARS = (
    "mlp.linear_fc1",
    "mlp.linear_fc2",
    "self_attention.linear_proj",
    "self_attention.linear_qkv",
)


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    out = tmp_path_factory.mktemp("switch")
    cmd = [sys.executable, str(WORKERS / "backend_switch.py"), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads((out / "results.json").read_text())


def test_te_keys_come_from_megatron_cores_te_spec():
    sys.path.insert(0, str(WORKERS))
    try:
        import te_spec
    finally:
        sys.path.remove(str(WORKERS))
    modules = te_spec.extra_state_modules()
    # TE's fused attention saves nothing (megatron-core drops its extra state); its linears and
    # the block's final norm do.
    assert modules == {
        **{f"decoder.layers.{m}": te_spec.layer_te_modules()[m] for m in LINEARS},
        "decoder.final_layernorm": "TENorm",
    }
    assert te_spec.layer_te_modules()["self_attention.core_attention"] == "TEDotProductAttention"


def test_local_and_te_checkpoints_differ_in_the_final_norms_extra_state(switch):
    linears = [f"decoder.layers.{m}._extra_state" for m in LINEARS]
    assert switch["local_objects"] == linears  # megatron-core's local linears save one too
    assert switch["te_objects"] == ["decoder.final_layernorm._extra_state", *linears]


def test_local_checkpoint_loads_into_te_keeping_the_missing_extra_state(switch):
    result = switch["local_to_te"]
    assert result["weights_equal"]
    assert set(result["received"]) == set(switch["te_modules"])  # every one is set
    assert result["received"]["decoder.final_layernorm"] == "fp8-scaling-metadata"  # its own
    assert {v for k, v in result["received"].items() if "layers" in k} == {"None"}
    assert result["log"] == [
        result["log"][0].split(": ")[0] + ": 1 _extra_state entry absent (saved by another "
        "layer spec, e.g. the local spec): kept as built (decoder.final_layernorm._extra_state)"
    ]


def test_without_the_handling_the_load_fails_naming_the_key(switch):
    error = switch["local_to_te_unaligned"]["error"]
    assert "cannot be loaded" in error and "decoder.final_layernorm._extra_state" in error


def test_te_checkpoint_loads_into_local_ignoring_extra_state(switch):
    result = switch["te_to_local"]
    assert result["weights_equal"] and result["received"] == {}
    assert len(result["log"]) == 1 and "1 _extra_state entry not used" in result["log"][0]


@pytest.mark.parametrize("case", ["te_to_te", "local_to_local"])
def test_same_spec_round_trips(switch, case):
    result = switch[case]
    assert result["weights_equal"] and result["log"] == []
    if case == "te_to_te":
        assert set(result["received"].values()) == {"fp8-scaling-metadata"}
