"""The stage lists of ``preprocess/stages/__init__.py``: a stage added to a list, with a flag of
its own,
runs in its place, is timed and counted in the stats, and its flag switches it off."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from megatron_dscoder.config.flags import add_flags, opt, values_from_args
from megatron_dscoder.preprocess import stages
from megatron_dscoder.preprocess.config import PreprocessConfig
from megatron_dscoder.preprocess.pipeline import run_pipeline
from megatron_dscoder.preprocess.records import Record
from megatron_dscoder.preprocess.stages.base import Stage
from tests.preprocess.preprocess_helpers import write_jsonl


@dataclass(frozen=True, kw_only=True)
class WithTodoFlag(PreprocessConfig):
    """The options with the new stage's flag, as the recipe adds it to PreprocessConfig."""

    drop_todo: bool = opt(False, "drop files that contain a TODO")


def drop_todo_stage(records: list[Record], config: object, stats: object) -> list[Record]:
    return [r for r in records if "TODO" not in r.text]


def parse(argv: list[str]) -> WithTodoFlag:
    parser = argparse.ArgumentParser()
    add_flags(parser, WithTodoFlag)
    return WithTodoFlag(**values_from_args(WithTodoFlag, parser.parse_args(argv)))


def test_a_stage_added_to_the_list_runs_in_order_and_its_flag_switches_it_off(
    tmp_path: Path, tiny_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(6)]
    texts[1] = "# TODO: faster\n" + texts[1]
    texts[4] = texts[4] + "# TODO: document\n"
    records = [{"text": t, "path": f"m{i}.py", "lang": "Python"} for i, t in enumerate(texts)]
    corpus = write_jsonl(tmp_path / "in.jsonl", records)
    calls: list[str] = []

    def spied(stage: Stage) -> Stage:
        def run(items: object, config: object, stats: object) -> object:
            calls.append(stage.name)
            return stage.run(items, config, stats)

        return Stage(stage.name, stage.enabled, run)

    record_stages = list(stages.RECORD_STAGES)
    record_stages.insert(1, Stage("todo", lambda o: o.drop_todo, drop_todo_stage))
    monkeypatch.setattr(stages, "RECORD_STAGES", [spied(s) for s in record_stages])
    monkeypatch.setattr(stages, "SAMPLE_STAGES", [spied(s) for s in stages.SAMPLE_STAGES])
    argv = [
        "--input",
        str(corpus),
        "--tokenizer-model",
        str(tiny_tokenizer_dir),
        "--workers",
        "1",
        "--no-progress",
        "--no-dedup",
        "--no-decontaminate",
        "--fim-rate",
        "0",
    ]

    on = run_pipeline(parse([*argv, "--output-prefix", str(tmp_path / "on" / "d"), "--drop-todo"]))
    assert calls == ["filter", "todo", "quality", "hooks", "fim", "tokenize"]
    assert on["dropped_by_stage"] == {"todo": 2} and on["documents_out"] == 4
    assert "todo" in on["stage_seconds_summed"] and on["files_out"] == 4

    calls.clear()
    off = run_pipeline(parse([*argv, "--output-prefix", str(tmp_path / "off" / "d")]))
    assert calls == ["filter", "quality", "hooks", "fim", "tokenize"]
    assert off["dropped_by_stage"] == {} and off["documents_out"] == 6
    assert "todo" not in off["stage_seconds_summed"]


def test_the_flags_are_the_fields() -> None:
    """Every field of PreprocessConfig is a flag (a sub-config: an off flag and its fields'),
    or says it is not; flags left out keep the defaults, written once in the dataclasses."""
    parser = argparse.ArgumentParser()
    add_flags(parser, PreprocessConfig)
    dests = {action.dest for action in parser._actions}
    for f in fields(PreprocessConfig):
        if f.metadata.get("cli", True):
            assert f.name in dests or f"{f.name}.off" in dests, f.name
    assert {"dedup.threshold", "quality.generated", "decontam.benchmarks"} <= dests
    argv = (
        "--input a b --tokenizer-model t --output-prefix o/x --no-filters --dedup-threshold 0.8 "
        "--no-dedup-verify --no-drop-generated --decontaminate-files m.jsonl:text "
        "--max-record-mb 1 --bos"
    ).split()
    config = parse(argv)
    assert config.inputs == ("a", "b") and not config.apply_filters and config.bos
    assert config.dedup is not None and config.dedup.threshold == 0.8 and not config.dedup.verify
    assert config.dedup.ngram == 5, "unset sub-config flags keep the sub-config's defaults"
    assert config.quality is not None and not config.quality.generated
    assert config.decontam is not None
    assert [b.name for b in config.decontam.benchmarks] == ["humaneval", "m"]
    assert config.max_record_bytes == 1 << 20 and config.fim_rate == 0.5
    assert config == parse(argv)
    off = parse(
        [
            "--input",
            "a",
            "--tokenizer-model",
            "t",
            "--output-prefix",
            "o/x",
            "--no-dedup",
            "--no-quality",
            "--no-decontaminate",
        ]
    )
    assert off.dedup is None and off.quality is None and off.decontam is None
    with pytest.raises(ValueError, match="--fim-rate must be in"):
        parse(["--input", "a", "--tokenizer-model", "t", "--output-prefix", "o", "--fim-rate", "2"])
    with pytest.raises(ValueError, match="--dedup-threshold must be in"):
        parse(
            [
                "--input",
                "a",
                "--tokenizer-model",
                "t",
                "--output-prefix",
                "o",
                "--dedup-threshold",
                "0",
            ]
        )
