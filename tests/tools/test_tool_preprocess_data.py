"""tools/preprocess_data.py, run as a user would: toy run, errors, and a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from megatron_dscoder.tokenizer import EOS, FIM_BEGIN, FIM_END, FIM_HOLE, load_tokenizer

REPO = Path(__file__).resolve().parents[2]
TOOL = str(REPO / "tools" / "preprocess_data.py")


def make_corpus(path: Path, files: int) -> Path:
    with open(path, "w") as f:
        for i in range(files):
            repo = f"org/r{i % 7}"
            text = f"import m{(i + 1) % files}\n\ndef run_{i}(value):\n    return value + {i}\n"
            f.write(
                json.dumps({"text": text, "repo": repo, "path": f"m{i}.py", "lang": "Python"})
                + "\n"
            )
    return path


def test_cli_toy_run(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    corpus = make_corpus(tmp_path / "in.jsonl", 60)
    prefix = tmp_path / "out" / "code"
    result = subprocess.run(
        [
            sys.executable,
            TOOL,
            "--input",
            str(corpus),
            "--tokenizer-model",
            str(tiny_tokenizer_dir),
            "--output-prefix",
            str(prefix),
            "--workers",
            "2",
            "--fim-rate",
            "0.5",
            "--seed",
            "3",
            "--stats-json",
            str(tmp_path / "stats.json"),
            "--report",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "report.md",
        "languages.png",
        "drops.png",
    }
    assert "pass 2/2" in result.stderr and "docs_s" in result.stderr  # the progress bar
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["documents_in"] == 60 and stats["files_out"] == 60 and stats["workers"] == 2
    assert stats["documents_out"] == sum(stats["fim"].values())
    assert set(stats["seconds"]) >= {"pass1_read_filter_spill", "pass2_order_fim_tokenize", "total"}
    assert stats["tokens"] * 2 == stats["bin_bytes"] == (prefix.parent / "code.bin").stat().st_size
    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)
    assert tokens[-1] == load_tokenizer(tiny_tokenizer_dir).token_to_id(EOS)


def test_cli_reports_missing_fim_tokens(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    doc = load_tokenizer(tiny_tokenizer_dir).to_str()
    for name in (FIM_BEGIN, FIM_HOLE, FIM_END):
        doc = doc.replace(f'"{name}"', f'"{name.replace("fim", "xim")}"')
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(doc, "utf-8")
    corpus = make_corpus(tmp_path / "in.jsonl", 5)
    result = subprocess.run(
        [
            sys.executable,
            TOOL,
            "--input",
            str(corpus),
            "--tokenizer-model",
            str(tmp_path / "tok"),
            "--output-prefix",
            str(tmp_path / "out" / "x"),
            "--fim-rate",
            "0.5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert all(name in result.stderr for name in (FIM_BEGIN, FIM_HOLE, FIM_END))
    assert not (tmp_path / "out").exists()


def test_killed_run_leaves_no_complete_looking_pair(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    corpus = tmp_path / "big.jsonl"
    line = json.dumps({"text": "function f(a) {\n  return a + 1;\n}\n" * 40, "path": "f.js"}) + "\n"
    corpus.write_text(line * 12000)  # ~16 MB: many seconds of work
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            TOOL,
            "--input",
            str(corpus),
            "--tokenizer-model",
            str(tiny_tokenizer_dir),
            "--output-prefix",
            str(out / "code"),
            "--workers",
            "1",
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partial = (  # shards written, or the merged output being written
            [*out.glob("code.work-*/s*.tok.npy"), *out.glob("code.bin.*.partial")]
            if out.exists()
            else []
        )
        if partial:
            break
        time.sleep(0.005)
    assert proc.poll() is None and partial, "the run should still be writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    names = os.listdir(out)
    assert "code.idx" not in names and "code.bin" not in names
    assert all(n.endswith(".partial") or ".work-" in n for n in names)


def load_tool() -> object:
    """The tool's logic (``tools/preprocess_data.py`` is a wrapper around it)."""
    from megatron_dscoder.preprocess import cli

    return cli


def test_cli_dedup_decontamination_and_engine_flags(tmp_path: Path) -> None:
    tool = load_tool()
    base = ["--input", "x.jsonl", "--tokenizer-model", "tok", "--output-prefix", "out/x"]
    default = tool.config_from_args(tool.parse_args(base))
    assert default.engine == "local" and default.ray_address is None
    assert default.dedup.threshold == 0.7 and default.dedup.ngram == 5
    assert default.dedup.num_perm == 256 and default.dedup.verify
    assert [b.name for b in default.decontam.benchmarks] == ["humaneval"]
    off = tool.config_from_args(tool.parse_args([*base, "--no-dedup", "--no-decontaminate"]))
    assert off.dedup is None and off.decontam is None
    custom = tool.config_from_args(
        tool.parse_args(
            [
                *base,
                "--engine",
                "ray",
                "--ray-address",
                "auto",
                "--dedup-threshold",
                "0.8",
                "--decontaminate-files",
                "b/mbpp.jsonl:text,code",
                "gsm8k.jsonl.gz",
            ]
        )
    )
    assert custom.engine == "ray" and custom.ray_address == "auto"
    assert custom.dedup.threshold == 0.8
    specs = custom.decontam.benchmarks
    assert [(b.name, b.path, b.fields) for b in specs[1:]] == [
        ("mbpp", "b/mbpp.jsonl", ("text", "code")),
        ("gsm8k", "gsm8k.jsonl.gz", ()),
    ]
