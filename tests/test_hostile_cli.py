"""Generated argument vectors for the entry points: exit 0, or one line and exit 1/2, never a
traceback (hypothesis).

Each example runs the entry point's parser and validation in-process, up to the point where real
work would start: ``dscoder-pretrain`` through :func:`config.cli.parse` (and the planner for
``--dry-run``), ``dscoder-generate`` and ``dscoder-eval-humaneval`` against a model directory
without a tokenizer (their last check), ``dscoder-convert`` against missing or empty sources,
``dscoder-preprocess`` up to its plan (every check of inputs, outputs and the tokenizer).
``dscoder-preprocess-sft`` and ``dscoder-train-tokenizer`` run to the end on tiny inputs.

The number of examples comes from a settings profile chosen by ``DSCODER_FUZZ_PROFILE``: ``ci``
(the default, a few seconds inside ``make test``) or ``fuzz`` (``make fuzz``, minutes).
"""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

HOSTILE = ["-1", "0", "0.5", "nan", "inf", "-inf", "1e309", "", "abc", "-0"]
NUMBERS = ["1", "2", "4", "8"] * 4 + HOSTILE
"""Mostly valid values, so that vectors also get past the first check."""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hostile")
    model = root / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"")
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    latin1 = root / "latin1.py"
    latin1.write_bytes("# caf\xe9\n".encode("latin-1"))
    utf8 = root / "ok.py"
    utf8.write_text("def f():\n    return 1\n")
    (root / "afile").write_text("")
    records = root / "records.jsonl"
    records.write_text(
        '{"instruction": "Add.", "output": "a + b"}\n{"text": "x = 1\\n", "path": "a.py"}\n'
    )
    os.mkfifo(root / "fifo")
    hostile_records = {  # records that once cost dscoder-preprocess-sft its run
        "surrogate.jsonl": b'{"instruction": "\\ud800", "output": "x"}\n',
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "bom_array.json": b'\xef\xbb\xbf[{"instruction": "a", "output": "b"}]',
        "truncated.json": b'[{"instruction": "a", "output": "b"}, {"instr',
    }
    for name, data in hostile_records.items():
        (root / name).write_bytes(data)
    return {
        "model": str(model),
        "pickled": str(pickled),
        "latin1": str(latin1),
        "utf8": str(utf8),
        "empty_dir": str(tmp_path_factory.mktemp("empty")),
        "missing": str(root / "missing"),
        "under_file": str(root / "afile" / "x"),
        "records": str(records),
        "fifo": str(root / "fifo"),
        **{name: str(root / name) for name in hostile_records},
    }


def _paths(files: dict[str, str]) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(files.values()))


def _argv(flags: dict[str, st.SearchStrategy[str] | None]) -> st.SearchStrategy[list[str]]:
    """A list of flags (each with a value from its strategy, or alone when None)."""

    def one(name: str) -> st.SearchStrategy[list[str]]:
        values = flags[name]
        return st.just([name]) if values is None else values.map(lambda v: [name, v])

    pairs = st.lists(st.sampled_from(sorted(flags)).flatmap(one), max_size=4)
    return pairs.map(lambda ps: [token for pair in ps for token in pair])


def _outcome(call) -> tuple[int, str]:
    """(exit status, stderr) of ``call()``; any other exception fails the example."""
    err, environ = io.StringIO(), dict(os.environ)  # dscoder-convert hides CUDA devices
    import torch

    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        torch.random.fork_rng(devices=[]),  # dscoder-generate seeds torch's generator
    ):
        try:
            code = call()
        except SystemExit as exit_:
            code = exit_.code
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return (0 if code is None else code), err.getvalue()


def _check(code: int, err: str) -> None:
    event(f"exit {code}")  # shown by --hypothesis-show-statistics
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err


def _fuzz(main, base: list[str], flags: dict[str, st.SearchStrategy[str] | None]) -> None:
    """``main(base + argv)`` for generated ``argv``: exit 0, or 1/2 with one clear line."""

    @given(argv=_argv(flags))
    def run(argv: list[str]) -> None:
        _check(*_outcome(lambda: main(base + argv)))

    run()


def test_pretrain(files):
    from megatron_dscoder.config import cli
    from megatron_dscoder.training import planner

    num = st.sampled_from(NUMBERS)
    flags = {
        "--model": st.sampled_from(["debug", "1.3b", "33b", "nope", ""]),
        "--stage": st.sampled_from(["pretrain", "extend-context", "sft", "x"]),
        "--train-iters": num,
        "--global-batch-size": num,
        "--micro-batch-size": num,
        "--seq-length": num,
        "--lr": num,
        "--min-lr": num,
        "--clip-grad": num,
        "--adam-beta2": num,
        "--max-nonfinite-iters": num,
        "--keep-checkpoints": num,
        "--save-interval": num,
        "--exit-duration-in-mins": num,
        "--tensor-model-parallel-size": num,
        "--pipeline-model-parallel-size": num,
        "--gpu-memory-gib": num,
        "--assumed-efficiency": num,
        "--split": st.sampled_from(["99,1,0", "0,0,0", "a,b", "-1,2,0", "nan,1,1"]),
        "--load": _paths(files),
        "--data-path": _paths(files),
        "--tokenizer-model": _paths(files),
        "--dry-run": None,
        "--bf16": None,
        "--allow-unverified-checkpoint": None,
    }

    base = ["--model", "debug", "--mock-data", "--train-iters", "4", "--global-batch-size", "8"]

    @given(argv=_argv(flags))
    def run(argv: list[str]) -> None:
        def call() -> int:
            args, config = cli.parse(base + argv, 1)
            if args.dry_run:
                return planner.dry_run(config, args.gpu_memory_gib, args.assumed_efficiency)
            return 0

        _check(*_outcome(call))

    run()


def test_generate(files):
    from megatron_dscoder.evaluation import generate

    num = st.sampled_from(NUMBERS)
    flags = {
        "--model": _paths(files),
        "--prompt": st.text(max_size=8),
        "--prompt-file": _paths(files),
        "--fim-prefix-file": _paths(files),
        "--fim-suffix": st.text(max_size=8),
        "--max-new-tokens": num,
        "--temperature": num,
        "--top-p": num,
        "--seed": num,
        "--chat": None,
    }

    base = ["--model", files["model"]]
    _fuzz(generate.main, base, flags)


def test_eval_humaneval(files):
    from megatron_dscoder.evaluation import humaneval

    num = st.sampled_from(NUMBERS)
    flags = {
        "--model": _paths(files),
        "--tasks": st.sampled_from(["humaneval", "fim", "humaneval,fim", "x", ""]),
        "--limit": num,
        "--samples": num,
        "--temperature": num,
        "--max-new-tokens": num,
        "--timeout": num,
        "--workers": num,
        "--fim-corpus": _paths(files),
        "--fim-lines-per-file": num,
        "--fim-max-examples": num,
    }

    base = ["--model", files["model"]]
    _fuzz(humaneval.main, base, flags)


def test_convert(files):
    from megatron_dscoder.convert import cli

    num = st.sampled_from(NUMBERS)
    flags = {
        "--load": st.sampled_from([files["missing"], files["empty_dir"], files["pickled"]]),
        "--save": _paths(files),
        "--tensor-model-parallel-size": num,
        "--pipeline-model-parallel-size": num,
        "--logits-tolerance": num,
        "--max-shard-size-gb": num,
        "--dtype": st.sampled_from(["float32", "bfloat16", "int8"]),
    }
    direction = st.sampled_from([["to-hf"], ["from-hf"], ["sideways"], []])
    base = ["--load", files["missing"], "--save", files["missing"]]

    @given(head=direction, argv=_argv(flags))
    def run(head: list[str], argv: list[str]) -> None:
        _check(*_outcome(lambda: cli.main([*head, *base, *argv])))

    run()


def _outputs(root) -> st.SearchStrategy[str]:
    """Output paths: fresh ones under ``root`` (mostly), or hostile ones."""
    fresh = st.integers(0, 10**9).map(lambda i: str(root / f"o{i}" / "out"))
    hostile = st.sampled_from(
        [str(root), str(root) + "/", str(root / "afile"), str(root / "afile" / "x"), ""]
    )
    return st.one_of(fresh, fresh, hostile)


def test_preprocess(files, tiny_tokenizer_dir, tmp_path, monkeypatch):
    from megatron_dscoder.preprocess import cli

    monkeypatch.setattr(cli, "work", lambda prepared: 0)  # stop at the plan: no real work
    num = st.sampled_from(NUMBERS)
    unit = st.sampled_from(["0", "0.3", "1", "1.5", *HOSTILE])
    flags = {
        "--input": _paths(files),
        "--output-prefix": _outputs(tmp_path),
        "--tokenizer-model": st.sampled_from([str(tiny_tokenizer_dir), files["model"]]),
        "--stats-json": _outputs(tmp_path),
        "--tmp-dir": _outputs(tmp_path),
        "--workers": num,
        "--fim-rate": unit,
        "--fim-spm-rate": unit,
        "--max-record-mb": num,
        "--partition-mb": num,
        "--output-shard-mb": num,
        "--dedup-threshold": unit,
        "--max-function-lines": num,
        "--syntax-max-error-fraction": unit,
        "--engine": st.sampled_from(["local", "ray", "spark"]),
        "--no-dedup": None,
        "--bos": None,
    }
    base = ["--input", files["records"], "--tokenizer-model", str(tiny_tokenizer_dir)]
    base += ["--output-prefix", str(tmp_path / "base" / "out")]
    _fuzz(cli.main, base, flags)


def test_preprocess_sft(files, tiny_tokenizer_dir, tmp_path):
    from megatron_dscoder.instruct import cli

    records = [files[k] for k in ("surrogate.jsonl", "deep.json", "bom_array.json")]
    records += [files[k] for k in ("truncated.json", "latin1", "records")]
    flags = {
        "--input": st.one_of(st.sampled_from(records), _paths(files)),
        "--output-prefix": _outputs(tmp_path),
        "--tokenizer-model": st.sampled_from([str(tiny_tokenizer_dir), files["model"]]),
        "--stats-json": _outputs(tmp_path),
        "--max-record-mb": st.sampled_from(["16", "0.0001", *HOSTILE]),
    }
    base = ["--input", files["records"], "--tokenizer-model", str(tiny_tokenizer_dir)]
    base += ["--output-prefix", str(tmp_path / "base" / "out")]
    _fuzz(cli.main, base, flags)


def test_train_tokenizer(files, tmp_path):
    from megatron_dscoder.preprocess.tokenizer import cli

    num = st.sampled_from(["300", "400", "100000", *HOSTILE])
    flags = {
        "--input": _paths(files),
        "--output": _outputs(tmp_path),
        "--vocab-size": num,
        "--max-chars": st.sampled_from(["1", "100", "1e9", *HOSTILE]),
        "--layout": st.sampled_from(["deepseek-coder", "deepseek-llm", "gpt2"]),
        "--text-field": st.sampled_from(["text", "content", "nope", ""]),
        "--no-filters": None,
    }
    base = ["--input", files["records"], "--output", str(tmp_path / "base"), "--vocab-size", "300"]
    _fuzz(cli.main, base, flags)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--output-shard-mb", v) for v in ("-1", "nan", "inf", "-inf")]
    + [
        (f, v)
        for f in ("--max-record-mb", "--partition-mb", "--dedup-group-mb")
        for v in ("0", "nan")
    ]
    + [("--workers", "0"), ("--workers", "-2")],
)
def test_preprocess_sizes_are_validated_naming_the_flag(files, tiny_tokenizer_dir, flag, value):
    from megatron_dscoder.preprocess import cli

    argv = ["--input", files["records"], "--tokenizer-model", str(tiny_tokenizer_dir)]
    argv += ["--output-prefix", files["missing"], f"{flag}={value}"]
    code, err = _outcome(lambda: cli.main(argv))
    assert code == 2 and err.startswith(f"error: {flag} must be") and err.count("\n") == 1, err


@pytest.mark.parametrize("flag", ["--prompt-file", "--fim-prefix-file"])
def test_a_fifo_prompt_file_is_refused_unread(files, flag):
    from megatron_dscoder.evaluation import generate

    code, err = _outcome(lambda: generate.main(["--model", files["model"], flag, files["fifo"]]))
    assert (code, err) == (2, f"error: {flag} {files['fifo']}: not a regular file (a FIFO, "
                              "socket or device)\n")  # fmt: skip
