"""Pins that agree: the GPU extras, the Docker image and megatron-core's declared ranges."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def pins(path: Path) -> dict[str, Version]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            found[req.name] = Version(spec.version)
    return found


def megatron_core_requirement(name: str) -> Requirement:
    (req,) = [
        Requirement(r)
        for r in metadata.requires("megatron-core")
        if Requirement(r).name == name and "dev" in r
    ]
    return req


def test_transformer_engine_pin_is_in_megatron_cores_range():
    gpu = pins(REPO / "requirements-gpu.txt")
    declared = megatron_core_requirement("transformer-engine").specifier
    assert str(declared) == "<2.12.0,>=2.9.0a0"  # megatron-core 0.16.1's metadata
    assert declared.contains(gpu["transformer-engine"], prereleases=True)


def test_the_image_and_the_pins_name_the_same_stack():
    gpu = pins(REPO / "requirements-gpu.txt")
    (base,) = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert base == "nvcr.io/nvidia/pytorch:25.12-py3"
    te = gpu["transformer-engine"]
    assert f"Transformer Engine {te.major}.{te.minor}" in DOCKERFILE
    assert f"flash-attn {gpu['flash-attn']}" in DOCKERFILE
    # The build refuses a TE outside megatron-core's range (a later base tag must pass it).
    assert "V('2.9.0a0') <= te < V('2.12.0')" in DOCKERFILE


def test_minimum_torch_is_the_images():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (dependency,) = project["project"]["dependencies"]
    assert dependency == "torch>=2.10.0a0"
    assert "torch 2.10.0a0" in DOCKERFILE
    assert "oldest torch supported is 2.10" in (REPO / "README.md").read_text()


def test_the_image_keeps_ngcs_stack_and_bakes_in_no_wandb_mode():
    assert "WANDB_MODE=" not in DOCKERFILE.replace("-e WANDB_MODE=", "")
    assert 'PIP_CONSTRAINT=""' not in DOCKERFILE
    # The stack is recorded before our installs and compared after them.
    before = DOCKERFILE.index("stack_versions.py > /tmp/stack-before.txt")
    install = DOCKERFILE.index('pip install "megatron-core==')
    after = DOCKERFILE.index("stack_versions.py | diff /tmp/stack-before.txt -")
    assert before < install < after
