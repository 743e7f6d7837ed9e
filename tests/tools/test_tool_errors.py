"""dscoder-generate and dscoder-eval-humaneval: every user mistake is one line and exit 2 before
any model is loaded, and a program that exits 0 before its tests ran is not a pass."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from megatron_dscoder.evaluation import generate
from megatron_dscoder.evaluation import humaneval as ev


def _one_line_exit_2(capsys, main, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def model_dir(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"")  # never read: every case fails before
    return model


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("--max-new-tokens -1", "--max-new-tokens must be > 0, got -1"),
        ("--max-new-tokens 0", "--max-new-tokens must be > 0, got 0"),
        ("--temperature -1", "--temperature must be >= 0, got -1"),
        ("--temperature nan", "--temperature must be a finite number >= 0, got nan"),
        ("--top-p 0", "--top-p must be in (0, 1], got 0"),
    ],
)
def test_generate_numeric_flags(capsys, model_dir, flags, expected):
    argv = ["--model", str(model_dir), "--prompt", "x", *flags.split()]
    assert expected in _one_line_exit_2(capsys, generate.main, argv)


def test_generate_names_a_latin1_prompt_file(capsys, model_dir, tmp_path):
    prompt = tmp_path / "prompt.py"
    prompt.write_bytes("# café\n".encode("latin-1"))
    err = _one_line_exit_2(
        capsys, generate.main, ["--model", str(model_dir), "--prompt-file", str(prompt)]
    )
    assert f"--prompt-file {prompt}: not UTF-8 text (byte 0xe9 at offset 5)" in err


def test_generate_refuses_pickled_weights_without_suggesting_to_run_them(capsys, tmp_path):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    err = _one_line_exit_2(capsys, generate.main, ["--model", str(model), "--prompt", "x"])
    assert f"{model / 'pytorch_model.bin'}: pickled weights are refused" in err
    assert "weights_only" not in err


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("--samples 0", "--samples must be > 0, got 0"),
        ("--timeout -1", "--timeout must be > 0, got -1"),
        ("--timeout nan", "--timeout must be a finite number > 0, got nan"),
        ("--limit 0", "--limit must be > 0, got 0"),
        ("--timeout inf", "--timeout must be a finite number > 0, got inf"),
        ("--workers 0", "--workers must be > 0, got 0"),
        ("--tasks fim --fim-corpus /nonexistent/corpus", "--fim-corpus /nonexistent/corpus: no"),
    ],
)
def test_eval_flags(capsys, model_dir, flags, expected):
    argv = ["--model", str(model_dir), *flags.split()]
    assert expected in _one_line_exit_2(capsys, ev.main, argv)


class ExitsEarly:
    """A completion that leaves with status 0 before HumanEval's tests run."""

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return "    import os\n    os._exit(0)\n"

    def infill(self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        raise AssertionError("not used")


def test_exiting_before_the_tests_is_not_a_pass():
    problems = ev.humaneval_problems(1)
    summary, records = ev.evaluate_humaneval(ExitsEarly(), problems, timeout=10.0, workers=1)
    assert summary["pass@1"] == 0.0 and records[0]["status"] == "failed"
    canonical = {"prompt": problems[0]["prompt"]}

    class Canonical(ExitsEarly):
        def complete(self, prompt: str, **_) -> str:
            assert prompt == canonical["prompt"]
            return problems[0]["canonical_solution"]

    summary, _ = ev.evaluate_humaneval(Canonical(), problems, timeout=10.0, workers=1)
    assert summary["pass@1"] == 1.0


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_dry_run_memory_must_be_finite_and_positive(capsys, value):
    from megatron_dscoder.config import cli

    argv = ["--model", "33b", "--dry-run", "--gpu-memory-gib", value]
    err = _one_line_exit_2(capsys, lambda a: cli.parse(a, 1), argv)
    assert "--gpu-memory-gib must be a finite number > 0" in err


@pytest.mark.parametrize(
    "content, expected",
    [(b"{bad json\n", "line 3: Expecting property name"), (b"\xe9\n", "can't decode byte 0xe9")],
)
def test_fim_corpus_errors_name_the_file(tmp_path, content, expected):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"content": "x = 1\\n"}\n[1, 2]\n' + content)
    with pytest.raises(ValueError, match="--fim-corpus") as err:
        list(ev.corpus_texts(corpus))
    assert str(corpus) in str(err.value) and expected in str(err.value)
