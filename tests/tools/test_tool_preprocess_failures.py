"""tools/preprocess_data.py under failure: a SIGKILLed driver, a full disk, user mistakes.

- SIGKILL of the tool mid-run: its pool workers are gone within 10 s, and the next run with the
  same prefix removes the dead run's ``PREFIX.work-*`` directory.
- A disk that fills at the final write (a real 256 KiB tmpfs where this test may mount one,
  else an injected ENOSPC at the final prefix, said in the test id): one line "no space left on
  device (DIR)", exit 2, no partial file left, the previous output byte-identical.
- User mistakes (a misspelt second input, a prefix ending in ``/``, a tokenizer directory
  without tokenizer.json): one line, exit 2, no traceback, nothing written.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dscoder.data import indexed
from tests.tools.test_tool_preprocess_data import REPO, TOOL, load_tool, make_corpus

FAST = ["--no-dedup", "--no-decontaminate", "--fim-rate", "0", "--no-progress"]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_sigkill_of_the_tool_takes_its_workers_along(tmp_path: Path, tiny_tokenizer_dir) -> None:
    corpus = tmp_path / "big.jsonl"
    with open(corpus, "w") as f:
        for i in range(20000):  # minutes of work: the kill must land mid-run on any machine
            text = f"function f{i}(a) {{\n  return a + {i};\n}}\n" * 40
            f.write(json.dumps({"text": text, "path": f"f{i}.js"}) + "\n")
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
            "2",
            *FAST,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _descendants(proc.pid)  # the pool's workers (and its resource tracker)
        if len(workers) >= 2 and list(out.glob("code.work-*")):
            break
        time.sleep(0.01)
    # Kill in the middle of the work: once the workers have written their first shard files.
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.is_file() for p in out.glob("code.work-*/**/*")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run should still be working"
    workers = _descendants(proc.pid)
    assert len(workers) >= 2, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    killed = time.monotonic()
    while time.monotonic() < killed + 10 and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not [p for p in workers if _alive(p)], "workers outlived the killed driver"
    print(f"workers gone {time.monotonic() - killed:.2f} s after the SIGKILL")
    stale = list(out.glob("code.work-*"))
    assert stale and not list(out.glob("code.bin")) and not list(out.glob("code.idx"))
    small = make_corpus(tmp_path / "small.jsonl", 5)
    assert (
        load_tool().main(
            [
                "--input",
                str(small),
                "--tokenizer-model",
                str(tiny_tokenizer_dir),
                "--output-prefix",
                str(out / "code"),
                "--workers",
                "1",
                *FAST,
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["code.bin", "code.idx"]  # swept


def _try_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_a_full_disk_at_the_final_write_keeps_the_previous_output(
    tmp_path: Path,
    tiny_tokenizer_dir,
    disk: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "disk"
    mounted = disk == "tmpfs" and _try_tmpfs(target, "256k")
    if disk == "tmpfs" and not mounted:
        pytest.skip("cannot mount a tmpfs here (the injected case still runs)")
    if disk == "injected":
        target.mkdir()
    try:
        tool = load_tool()
        prefix = str(target / "code")
        base = [
            "--tokenizer-model",
            str(tiny_tokenizer_dir),
            "--output-prefix",
            prefix,
            "--workers",
            "1",
            "--tmp-dir",
            str(tmp_path / "work"),
            *FAST,
        ]
        assert tool.main(["--input", str(make_corpus(tmp_path / "small.jsonl", 5)), *base]) == 0
        before = {p.name: p.read_bytes() for p in target.iterdir()}
        big = tmp_path / "big.jsonl"
        with open(big, "w") as f:
            for i in range(3000):  # ~400k tokens: 800 KB of uint16, more than the disk holds
                text = f"def f{i}(a):\n    return a * {i} + {i * 7}\n" * 4
                f.write(json.dumps({"text": text, "path": f"m{i}.py"}) + "\n")
        if disk == "injected":
            _inject_enospc(monkeypatch, prefix)
        capsys.readouterr()
        assert tool.main(["--input", str(big), *base]) == 1  # found once work had started
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err == f"error: no space left on device ({target})", err
        assert {p.name: p.read_bytes() for p in target.iterdir()} == before
        assert not list((tmp_path / "work").iterdir())
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], check=True)


def _inject_enospc(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """The final writer's appends fail as a full disk does, after 64 KiB have been written."""
    original = indexed.IndexedDatasetWriter.add

    def add(self, tokens, lengths) -> None:
        original(self, tokens, lengths)
        if self.prefix == prefix and self.tokens * self.dtype.itemsize > 64 << 10:
            with indexed._out_of_space_named(self.directory):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(indexed.IndexedDatasetWriter, "add", add)


def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path, tiny_tokenizer_dir) -> None:
    good = make_corpus(tmp_path / "in.jsonl", 5)
    (tmp_path / "tok_without_json").mkdir()
    (tmp_path / "tok_without_json" / "tokenizer_config.json").write_text("{}")
    tok = str(tiny_tokenizer_dir)
    cases = {
        "no such file or directory": [
            "--input",
            str(good),
            str(tmp_path / "in.jsnol"),
            "--tokenizer-model",
            tok,
            "--output-prefix",
            "o/x",
        ],
        "must end in a file name prefix": [
            "--input",
            str(good),
            "--tokenizer-model",
            tok,
            "--output-prefix",
            "o/",
        ],
        "has no tokenizer.json": [
            "--input",
            str(good),
            "--tokenizer-model",
            str(tmp_path / "tok_without_json"),
            "--output-prefix",
            "o/x",
        ],
    }
    for expected, argv in cases.items():
        result = subprocess.run(
            [sys.executable, TOOL, *argv, *FAST],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert result.returncode == 2, (expected, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error:"), lines
    assert not (tmp_path / "o").exists()


def test_more_mistakes_are_refused_before_any_work(
    tmp_path: Path,
    tiny_tokenizer_dir,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = make_corpus(tmp_path / "in.jsonl", 5)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "out" / "code.bin").mkdir(parents=True)
    tok = str(tiny_tokenizer_dir)
    cases = {
        "not a regular file or a directory": ["--input", str(tmp_path / "fifo")],  # no hang
        "code.bin is a directory": ["--output-prefix", str(tmp_path / "out" / "code")],
        "--tmp-dir": ["--tmp-dir", str(tmp_path / "afile")],
        "--stats-json": ["--stats-json", str(tmp_path / "afile" / "stats.json")],
        "not a readable tokenizer.json": ["--tokenizer-model", str(good)],
    }
    tool = load_tool()
    for expected, override in cases.items():
        args = {
            "--input": str(good),
            "--tokenizer-model": tok,
            "--output-prefix": str(tmp_path / "out" / "x"),
        }
        args.update(dict(zip(override[::2], override[1::2], strict=True)))
        argv = [item for pair in args.items() for item in pair]
        assert tool.main([*argv, *FAST]) == 2, expected
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (expected, err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["code.bin"]
