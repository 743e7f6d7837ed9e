"""The pipeline as a cluster runs it: the driver moves references only, runs resume after a kill.

- On the session's two-node Ray cluster, the tool as a driver process of its own: the I/O of
  its own threads (``rchar + wchar``; Ray's threads, whose RPC and timed imports grow with wall
  time, are left out: ``driver_probe.py``) grows by < 0.01 byte per added input byte from a
  corpus to one 4x larger, its peak RSS by < 10 %, its documents are those of ``--engine
  local``, and its last line names the parts it wrote.
- A cluster failure (a task whose worker keeps dying until its retries run out) is one line
  from the tool saying that rerunning the same command resumes from the work dir; so is a dead
  worker process of the local pool.
- A SIGKILLed tool (local, or a Ray driver joined to the session's cluster) rerun with the same
  ``--work-dir`` skips the tasks it had finished and writes byte-identical output.
- A Ray worker killed in each pass: its task is retried, the output byte-identical.
- ``--output-shard-mb`` (by default 1 GiB parts on Ray): parts and a manifest that training
  reads as a blend weighted by tokens, whose checksums (hashed while the parts were written)
  hold when every file is re-read; their documents are those of the one pair a local run
  writes (compared document by document where a test compares Ray with local runs).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.data.blend import parse_blend
from megatron_dscoder.data.indexed import read_documents
from megatron_dscoder.data.manifest import verify_manifest
from megatron_dscoder.errors import UserError, run_cli
from megatron_dscoder.preprocess.cli import work
from megatron_dscoder.preprocess.cluster import engine
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.pipeline import prepare_run
from tests.preprocess.preprocess_helpers import run
from tests.tools.test_tool_preprocess_data import REPO, TOOL

PROBE = Path(__file__).resolve().parents[1] / "driver_probe.py"
SMALL = {"partition_mb": 0.25, "task_bytes": 64 << 10, "region_bytes": 64 << 10}


def real_code(path: Path, megabytes: float) -> Path:
    """JSONL of standard-library sources, repository = top-level package (real code)."""
    std = Path(sysconfig.get_paths()["stdlib"])
    size, limit = 0, int(megabytes * (1 << 20))
    with open(path, "w") as f:
        while size < limit:
            for source in sorted(std.rglob("*.py")):
                rel = source.relative_to(std)
                if "test" in rel.parts[0] or size >= limit:
                    continue
                try:
                    text = source.read_text()
                except (OSError, UnicodeDecodeError):
                    continue
                repo = f"{rel.parts[0]}-{size // (1 << 22)}" if len(rel.parts) > 1 else ""
                line = json.dumps({"text": text, "repo": repo, "path": str(rel)}) + "\n"
                f.write(line)
                size += len(line)
    return path


def pair(prefix: Path) -> bytes:
    """The documents written at ``prefix`` (one pair, or the parts of its manifest, in order)
    as bytes: tokens, then lengths."""
    manifest = Path(f"{prefix}.parts") / "manifest.json"
    prefixes = parse_blend([str(manifest)])[0] if manifest.exists() else [str(prefix)]
    tokens, lengths = zip(*(read_documents(p) for p in prefixes), strict=True)
    return np.concatenate(tokens).tobytes() + np.concatenate(lengths).tobytes()


def drive(tmp_path: Path, corpus: Path, tokenizer: Path, name: str) -> tuple[int, int, dict]:
    """The tool as a Ray driver process of its own joined to the session's cluster: (its own
    threads' I/O bytes, its peak RSS in KiB, the stats); its last line names the parts."""
    import ray

    stats = tmp_path / f"{name}.json"
    done = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            "--input",
            str(corpus),
            "--tokenizer-model",
            str(tokenizer),
            "--engine",
            "ray",
            "--ray-address",
            ray.get_runtime_context().gcs_address,
            "--partition-mb",
            "0.25",
            "--output-prefix",
            str(tmp_path / name / "data"),
            "--stats-json",
            str(stats),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in done.stderr.splitlines() if x.startswith("DRIVER")), "")
    assert done.returncode == 0 and line, done.stderr[-3000:]
    prefix = tmp_path / name / "data"
    assert done.stdout.splitlines()[-1].startswith(
        f"wrote {prefix}.parts/ (1 part; train with --data-path {prefix}.parts/manifest.json)"
    ), done.stdout
    _, io, rss = line.split()
    return int(io), int(rss), json.loads(stats.read_text())


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")
def test_ray_driver_moves_no_corpus_bytes(
    tmp_path: Path, tiny_tokenizer_dir: Path, ray_local: object
) -> None:
    measured = {}
    for name, megabytes in (("small", 1.0), ("large", 4.0)):
        corpus = real_code(tmp_path / f"{name}.jsonl", megabytes)
        io, rss, stats = drive(tmp_path, corpus, tiny_tokenizer_dir, name)
        measured[name] = (io, rss, corpus.stat().st_size)
        assert stats["tasks"]["pass1:ran"] > 1 and stats["tasks"]["pass2:ran"] > 1
    (io_s, rss_s, size_s), (io_l, rss_l, size_l) = measured["small"], measured["large"]
    print(
        f"driver (I/O bytes, peak RSS KiB, input bytes): {measured}; "
        f"{(io_l - io_s) / (size_l - size_s):.6f} byte per added input byte"
    )
    assert (io_l - io_s) / (size_l - size_s) < 0.01
    assert rss_l < 1.1 * rss_s, "the driver's peak RSS does not grow with the input"
    assert (tmp_path / "large" / "data.parts" / "manifest.json").exists(), "Ray's default: parts"
    run(
        tmp_path,
        [tmp_path / "large.jsonl"],
        tiny_tokenizer_dir,
        workers=2,
        prefix=tmp_path / "local" / "data",
        partition_mb=0.25,
    )
    assert pair(tmp_path / "large" / "data") == pair(tmp_path / "local" / "data")


def die_once_per_pass(flags: str, samples: list, stats: object) -> list:
    """A sample hook that kills its worker process the first time it runs in each pass (a
    repository sample has several paths only in pass 2)."""
    name = "pass2" if any(len(s.paths) > 1 for s in samples) else "pass1"
    try:
        os.close(os.open(os.path.join(flags, name), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return samples
    os._exit(1)


def test_ray_retries_a_killed_worker_in_each_pass(
    tmp_path: Path, tiny_tokenizer_dir: Path, ray_local: object
) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    corpus = real_code(tmp_path / "code.jsonl", 1.0)
    flags = tmp_path / "flags"
    flags.mkdir()
    hook = functools.partial(die_once_per_pass, str(flags))
    run(
        tmp_path,
        [corpus],
        tiny_tokenizer_dir,
        engine="ray",
        sample_hooks=(hook,),
        prefix=tmp_path / "ray" / "data",
        **SMALL,
    )
    assert sorted(p.name for p in flags.iterdir()) == ["pass1", "pass2"]
    run(tmp_path, [corpus], tiny_tokenizer_dir, prefix=tmp_path / "local" / "data", **SMALL)
    assert pair(tmp_path / "ray" / "data") == pair(tmp_path / "local" / "data")


def die_always(samples: list, stats: object) -> list:
    """A sample hook that kills its worker process every time."""
    os._exit(1)


def failing_run(tmp_path: Path, tokenizer: Path, **options: object) -> str:
    """The tool's main path (:func:`run_cli` over prepare and work) on one small document whose
    worker always dies; the one line it reports (exit status 1: found after work started)."""
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"text": "def f():\n    return 1\n", "path": "f.py"}) + "\n")
    config = PreprocessConfig(
        inputs=[str(corpus)],
        tokenizer_model=str(tokenizer),
        output_prefix=str(tmp_path / "out" / "data"),
        work_dir=str(tmp_path / "work"),
        progress=False,
        sample_hooks=(die_always,),
        **options,
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_cli(lambda: prepare_run(config), work) == 1
    line = err.getvalue()
    assert line.startswith("error: ") and line.count("\n") == 1, line
    assert "rerun the same command to resume: finished tasks are kept in --work-dir" in line
    assert not (tmp_path / "out" / "data.bin").exists()
    return line


def test_a_cluster_failure_is_one_line_saying_a_rerun_resumes(
    tmp_path: Path, tiny_tokenizer_dir: Path, ray_local: object
) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    line = failing_run(tmp_path, tiny_tokenizer_dir, engine="ray")
    assert "the Ray cluster failed (WorkerCrashedError" in line, line


def test_nodes_running_other_sources_are_refused(
    ray_local: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node's megatron_dscoder is compared with the driver's (here: the driver's digest
    changed, as if the nodes ran another version)."""
    import ray

    monkeypatch.setattr(engine, "_checked", set())
    engine.check_workers_code(ray)  # the same sources everywhere
    monkeypatch.setattr(engine, "_checked", set())
    monkeypatch.setattr(engine, "source_fingerprint", lambda: ("/elsewhere", "0" * 16))
    with pytest.raises(UserError, match=r"Ray node \S+ runs another megatron_dscoder \(.+ than"):
        engine.check_workers_code(ray)


def test_a_dead_local_worker_is_one_line(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    line = failing_run(tmp_path, tiny_tokenizer_dir, workers=2)
    assert "a worker process died (BrokenProcessPool" in line, line


def kill_and_rerun(tmp_path: Path, tokenizer: Path, engine: list[str]) -> None:
    """SIGKILL the tool (the driver) in its second pass, rerun it with the same --work-dir:
    byte-identical to a clean local run, the finished tasks skipped (more than half)."""
    corpus = real_code(tmp_path / "code.jsonl", 3.0)
    base = [
        sys.executable,
        TOOL,
        "--input",
        str(corpus),
        "--tokenizer-model",
        str(tokenizer),
        "--workers",
        "2",
        "--partition-mb",
        "0.25",
        "--no-progress",
    ]
    clean = tmp_path / "clean" / "data"
    subprocess.run([*base, "--output-prefix", str(clean)], cwd=REPO, check=True)
    work = tmp_path / "work"
    resumed = tmp_path / "resumed" / "data"
    command = [
        *base,
        *engine,
        "--output-prefix",
        str(resumed),
        "--work-dir",
        str(work),
        "--stats-json",
        str(tmp_path / "stats.json"),
    ]
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(work.glob("done/pass2-*.json"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run should still be working"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    finished = len(list(work.glob("done/*.json")))
    subprocess.run(command, cwd=REPO, check=True)
    stats = json.loads((tmp_path / "stats.json").read_text())
    tasks, seconds = stats["tasks"], stats["task_seconds"]
    print(f"{finished} tasks done before the kill; rerun: {tasks}, task seconds {seconds}")
    assert tasks["pass1:skipped"] >= 10 and "pass1:ran" not in tasks
    skipped = sum(n for k, n in tasks.items() if k.endswith(":skipped"))
    assert skipped >= finished  # Ray tasks in flight at the kill may have finished since
    assert seconds["skipped"] > seconds["ran"], "the rerun redoes less than half of the work"
    assert pair(resumed) == pair(clean)
    leftovers = [p for p in work.rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial")]
    assert not leftovers, "what the killed attempts left is swept after a complete run"
    subprocess.run(command, cwd=REPO, check=True)  # everything done: all skipped, same output
    tasks = json.loads((tmp_path / "stats.json").read_text())["tasks"]
    assert not any(k.endswith(":ran") for k in tasks) and pair(resumed) == pair(clean)


def test_killed_run_resumes_from_its_work_dir(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    kill_and_rerun(tmp_path, tiny_tokenizer_dir, [])


def test_killed_ray_driver_resumes_from_its_work_dir(
    tmp_path: Path, tiny_tokenizer_dir: Path, ray_local: object
) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    kill_and_rerun(tmp_path, tiny_tokenizer_dir, ["--engine", "ray", "--ray-address", address])


def test_output_parts_and_manifest_blend(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    corpus = real_code(tmp_path / "code.jsonl", 1.0)
    run(tmp_path, [corpus], tiny_tokenizer_dir, prefix=tmp_path / "one" / "data", **SMALL)
    run(
        tmp_path,
        [corpus],
        tiny_tokenizer_dir,
        prefix=tmp_path / "parts" / "data",
        output_shard_mb=0.05,
        **SMALL,
    )
    prefixes, weights = parse_blend([str(tmp_path / "parts" / "data.parts" / "manifest.json")])
    assert len(prefixes) > 2 and weights is not None
    tokens, lengths = zip(*(read_documents(p) for p in prefixes), strict=True)
    assert weights == [float(t.size) for t in tokens]
    verify_manifest(str(tmp_path / "parts" / "data.parts" / "manifest.json"), full=True)
    whole_tokens, whole_lengths = read_documents(str(tmp_path / "one" / "data"))
    assert np.array_equal(np.concatenate(tokens), whole_tokens)
    assert np.array_equal(np.concatenate(lengths), whole_lengths)
    assert not (tmp_path / "parts" / "data.bin").exists()
