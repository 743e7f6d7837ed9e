"""tools/eval_humaneval.py: the harness scores known answers correctly, and its sandbox holds.

Acceptance: a stand-in model that returns each HumanEval problem's canonical solution scores
pass@1 = 1.0 over all 164 problems; one that returns ``pass`` scores 0.0. Every program runs in
the real sandbox (a separate limited process). The FIM exact-match task is checked the same way
with an oracle and an empty stand-in, and the command line end to end on a real tiny HF model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from megatron_dscoder.evaluation import humaneval as ev
from megatron_dscoder.tokenizer import EOS, load_tokenizer
from tests.convert.helpers import make_chain_model, make_tokenizer


class Canonical:
    """Answers each HumanEval prompt with the problem's canonical solution."""

    def __init__(self, problems: Sequence[dict]) -> None:
        self.answers = {p["prompt"]: p["canonical_solution"] for p in problems}

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return self.answers[prompt]

    def infill(self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        raise AssertionError("not used")


class Pass:
    """Answers every prompt with a body that does nothing."""

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return "    pass\n"

    def infill(self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return ""


class Oracle:
    """Infills the removed line (it knows the corpus), followed by more text to be cut."""

    def __init__(self, examples: Sequence) -> None:
        self.truth = {(e.prefix, e.suffix): e.middle for e in examples}

    def complete(self, prompt: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        raise AssertionError("not used")

    def infill(self, prefix: str, suffix: str, *, max_new_tokens: int, stop: Sequence[str]) -> str:
        return "  " + self.truth[(prefix, suffix)] + "\nextra_line()"


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return ev.humaneval_problems()


def test_canonical_solutions_score_one_and_pass_scores_zero(problems):
    assert len(problems) == 164
    summary, records = ev.evaluate_humaneval(Canonical(problems), problems, timeout=30, workers=2)
    failed = [
        (r["task_id"], r["status"], r["output"][-300:]) for r in records if r["status"] != "passed"
    ]
    assert summary["pass@1"] == 1.0, failed
    summary, records = ev.evaluate_humaneval(Pass(), problems, timeout=30, workers=2)
    assert summary["pass@1"] == 0.0
    assert {r["status"] for r in records} == {"failed"}


def test_pass_at_k_estimator():
    assert ev.pass_at_k(2, [1, 0], 1) == pytest.approx(0.25)
    assert ev.pass_at_k(10, [10, 0], 10) == pytest.approx(0.5)


def test_completion_is_cut_at_stop_strings(problems):
    problem = problems[0]
    extra = "\n\ndef unrelated():\n    raise SystemExit(1)\n"
    model = Canonical([problem])
    model.answers[problem["prompt"]] += extra
    summary, records = ev.evaluate_humaneval(model, [problem], timeout=30)
    assert summary["pass@1"] == 1.0
    assert "unrelated" not in records[0]["completion"]


def test_sandbox_limits(tmp_path: Path):
    start = time.perf_counter()
    result = ev.run_sandboxed("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timed out" and time.perf_counter() - start < 15
    assert not ev.run_sandboxed("x = bytearray(3 * 2**30)\n", memory_mb=512).passed
    victim = tmp_path / "keep.txt"
    victim.write_text("data")
    for attack in (
        f"import os\nos.remove({str(victim)!r})\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
    ):  # shell commands and hostile programs: tests/evaluation/test_sandbox.py
        assert ev.run_sandboxed(attack).status == "failed", attack
    assert victim.read_text() == "data"
    cwd = ev.run_sandboxed("import os\nprint(os.getcwd(), sorted(os.environ))\n")
    assert cwd.passed and "sandbox-" in cwd.output and "PYTHONPATH" not in cwd.output
    assert not Path(cwd.output.split()[0]).exists()  # the temporary directory is gone
    assert ev.run_sandboxed("raise SystemExit(0)\n").passed


def _corpus(root: Path) -> Path:
    root.mkdir()
    (root / "a.py").write_text("import os\n\n\ndef f(x):\n    y = x + 1\n    return y * 2\n")
    (root / "b.js").write_text("function g(a) {\n  const b = a * 3;\n  return b;\n}\n")
    (root / "notes.txt").write_text("not code\n")
    (root / "c.jsonl").write_text(json.dumps({"content": "int main() {\n  return 0;\n}\n"}) + "\n")
    return root


def test_fim_exact_match(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    texts = list(ev.corpus_texts(corpus))
    assert [Path(name).suffix for name, _ in texts] == [".py", ".js"]
    texts += list(ev.corpus_texts(corpus / "c.jsonl"))
    examples = ev.fim_examples(texts, lines_per_file=2, seed=3)
    assert len(examples) == 6
    assert examples == ev.fim_examples(texts, lines_per_file=2, seed=3)  # reproducible
    by_name = dict(texts)
    for ex in examples:
        assert ex.prefix + ex.middle + ex.suffix == by_name[ex.source]
        assert ex.middle.strip() and "\n" not in ex.middle
    summary, records = ev.evaluate_fim(Oracle(examples), examples)
    assert summary == {"examples": 6, "exact_match": 1.0}
    assert all(r["prediction"].strip() == r["expected"].strip() for r in records)
    summary, _ = ev.evaluate_fim(Pass(), examples)
    assert summary["exact_match"] == 0.0


def test_command_line_on_a_real_model(tmp_path, capsys):
    tok_dir = make_tokenizer(tmp_path / "tok")
    tok = load_tokenizer(tok_dir)
    model = make_chain_model(
        tmp_path / "model", tok_dir, tok.encode("    return 0").ids + [tok.token_to_id(EOS)]
    )
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "result.json"
    rc = ev.main(
        [
            "--model",
            str(model),
            "--tasks",
            "humaneval,fim",
            "--limit",
            "2",
            "--fim-corpus",
            str(corpus),
            "--max-new-tokens",
            "8",
            "--output",
            str(out),
            "--workers",
            "2",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["humaneval"]["problems"] == 2 and summary["humaneval"]["pass@1"] == 0.0
    assert summary["fim"]["examples"] == 2
    saved = json.loads(out.read_text())
    assert [r["completion"] for r in saved["records"]["humaneval"]] == ["    return 0"] * 2
    assert all(r["prediction"] == "    return 0" for r in saved["records"]["fim"])
    assert ev.main(["--model", str(model), "--tasks", "fim"]) == 2  # no corpus: clear error
    assert "--fim-corpus" in capsys.readouterr().err


def test_a_broken_sandbox_stops_the_evaluation_with_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sandbox's own failure is raised (not scored as a failed program) and reported in one
    line; ``SandboxError`` carries its message."""
    assert str(ev.SandboxError("the sandbox broke")) == "the sandbox broke"
    broken = ev.SandboxResult("error", "sandbox: cannot start the interpreter")
    monkeypatch.setattr(ev, "run_sandboxed", lambda program, timeout: broken)
    with pytest.raises(ev.SandboxError, match="cannot start the interpreter"):
        ev.evaluate_humaneval(Pass(), ev.humaneval_problems(1), workers=1)
    assert ev.main(["--model", "unused", "--tasks", "humaneval", "--limit", "1"], Pass()) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the sandbox failed") and err.count("\n") == 1
