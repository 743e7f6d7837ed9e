"""Near-dedup and decontamination inside the pipeline, on the local engine and on Ray.

The planted set of the acceptance criteria: five near-copies of one repository (renamed
variables, a changed comment), an exact duplicate file in an unrelated language, a file with a
HumanEval prompt and its canonical solution, and unrelated samples that must all survive.
Output is read back with megatron-core's IndexedDataset; Ray runs in local mode (one instance
for the whole session, see ``conftest.py``).
"""

from __future__ import annotations

import gzip
import json
import sysconfig
from pathlib import Path

import pytest

from megatron_dscoder.data import indexed
from megatron_dscoder.preprocess.stages.decontam import (
    BenchmarkSpec,
    DecontamConfig,
    humaneval_path,
)
from megatron_dscoder.preprocess.stages.minhash import exact_jaccard
from tests.preprocess.preprocess_helpers import decode, read_documents, run, tokenizer, write_jsonl


def stdlib_texts(names: tuple[str, ...]) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [(root / name).read_text("utf-8") for name in names]


JSON_FILES = ("json/__init__.py", "json/decoder.py", "json/encoder.py", "json/scanner.py")
JS_UTIL = (
    "export function clamp(value, low, high) {\n  return Math.min(high, Math.max(low, value));\n}\n"
)
JAVA = """package org.example.shop;

public final class Basket {
    private final java.util.List<String> items = new java.util.ArrayList<>();

    public void add(String item) { items.add(item); }

    public int size() { return items.size(); }
}
"""
GO = """package main

import "fmt"

func main() {
\tfor i := 0; i < 3; i++ {
\t\tfmt.Println("tick", i)
\t}
}
"""


def near_copy(text: str, k: int) -> str:
    """Rename two variables and change a comment, as a fork would."""
    text = text.replace("memo", f"memo_{k}").replace("_w(", f"_skip{k}(")
    return text.replace("# Assume this produces an infinity", f"# infinity, fork {k}")


def planted_records() -> list[dict]:
    problem = json.loads(gzip.open(humaneval_path(), "rt").readline())
    sources = dict(zip(JSON_FILES, stdlib_texts(JSON_FILES), strict=True))
    records = []
    for k in range(5):
        for path, text in sources.items():
            body = text if k == 0 else near_copy(text, k)
            records.append({"text": body, "repo": f"fork{k}/json", "path": path, "lang": "Python"})
    records += [
        {"text": JS_UTIL, "repo": "web/ui", "path": "src/util.js", "lang": "JavaScript"},
        {"text": JS_UTIL, "repo": "mirror/ui", "path": "src/util.js", "lang": "JavaScript"},
        {
            "text": "import math\n\n" + problem["prompt"] + problem["canonical_solution"],
            "repo": "student/hw",
            "path": "solution.py",
            "lang": "Python",
        },
        {"text": stdlib_texts(("textwrap.py",))[0], "repo": "tw/tw", "path": "textwrap.py"},
        {"text": stdlib_texts(("string.py",))[0], "repo": "st/st", "path": "string.py"},
        {"text": JAVA, "repo": "shop/basket", "path": "src/Basket.java", "lang": "Java"},
        {"text": GO, "repo": "go/tick", "path": "main.go", "lang": "Go"},
    ]
    return records


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("planted") / "in.jsonl"
    records = planted_records()
    return write_jsonl(
        path,
        [records[i] for i in (3, 17, 0, 21, 8, 5, 12, 2, 19, 23, 1)]
        + [r for i, r in enumerate(records) if i not in (3, 17, 0, 21, 8, 5, 12, 2, 19, 23, 1)],
    )


def test_planted_duplicates_and_benchmark_are_removed(
    tmp_path: Path, tiny_tokenizer_dir: Path, planted: Path
) -> None:
    originals = stdlib_texts(JSON_FILES)
    assert exact_jaccard("".join(originals), near_copy("".join(originals), 1)) > 0.8
    stats = run(tmp_path, [planted], tiny_tokenizer_dir, fim_rate=0.0)
    texts = [
        decode(tokenizer(tiny_tokenizer_dir), d) for d in read_documents(tmp_path / "out" / "data")
    ]
    assert sum("# json/decoder.py" in t for t in texts) == 1, "one copy of the repository"
    assert sum("Math.max(low, value)" in t for t in texts) == 1, "one copy of the JS file"
    assert not any("has_close_elements" in t for t in texts), "the HumanEval file is gone"
    for marker in ("class TextWrapper", "class Formatter", "class Basket", "fmt.Println"):
        assert sum(marker in t for t in texts) == 1, marker
    assert stats["documents_out"] == len(texts) == 6
    assert stats["decontamination"]["hits"] == {"humaneval": 1}
    assert stats["decontamination"]["dropped"] == 1
    dedup = stats["dedup"]
    assert (dedup["clusters"], dedup["dropped"]) == (2, 5)
    assert (dedup["dropped_repo_level"], dedup["dropped_file_level"]) == (4, 1)
    assert stats["documents_before_dedup"] == 11 and stats["files_out"] == 9
    for stage in (
        "word_hashes",
        "decontaminate",
        "minhash",
        "dedup_merge",
        "dedup_unique",
        "dedup_verify",
    ):
        assert stage in stats["stage_seconds_summed"], stage
    assert "dedup_groupby_components" in stats["seconds"]


def test_switches_and_extra_benchmark_files(
    tmp_path: Path, tiny_tokenizer_dir: Path, planted: Path
) -> None:
    plain = run(tmp_path, [planted], tiny_tokenizer_dir, dedup=None, decontam=None)
    assert plain["documents_out"] == 11 + 1 and plain["dedup"] == {"enabled": False}
    bench = write_jsonl(
        tmp_path / "shop.jsonl", [{"q": "public int size() { return items.size(); }"}]
    )
    extra = DecontamConfig(
        benchmarks=(BenchmarkSpec("humaneval"), BenchmarkSpec("shop", str(bench), ("q",)))
    )
    stats = run(tmp_path, [planted], tiny_tokenizer_dir, dedup=None, decontam=extra)
    assert stats["decontamination"]["hits"] == {"humaneval": 1, "shop": 1}
    assert stats["documents_out"] == 12 - 2


def test_ray_engine_output_is_byte_identical_to_local(
    tmp_path: Path, tiny_tokenizer_dir: Path, planted: Path, ray_local: object
) -> None:
    small = {
        "task_bytes": 20_000,
        "region_bytes": 30_000,
        "dedup_group_mb": 64 / (1 << 20),
        "output_shard_mb": 0.0,  # one pair with Ray too, to compare bytes
        "seed": 5,
    }
    outputs, stats = [], []
    for engine, workers in (("local", 1), ("local", 2), ("ray", 2)):
        prefix = tmp_path / f"{engine}{workers}" / "data"
        stats.append(
            run(
                tmp_path,
                [planted],
                tiny_tokenizer_dir,
                workers=workers,
                prefix=prefix,
                engine=engine,
                keep_shards=engine == "ray",
                **small,
            )
        )
        outputs.append([Path(f"{prefix}.{ext}").read_bytes() for ext in ("bin", "idx")])
    assert outputs[0] == outputs[1] == outputs[2]
    ray_stats = stats[2]
    assert ray_stats["engine"] == "ray" and ray_stats["shards"] > 3
    assert ray_stats["dedup"]["key_ranges"] > 1 and ray_stats["dedup"]["verify_tasks"] > 1
    assert ray_stats["dedup"] == stats[0]["dedup"] and ray_stats["dedup"]["dropped"] >= 5
    shards = sorted((tmp_path / "ray2" / "data.shards").glob("shard-*.idx"))
    assert len(shards) > 1
    merged = b"".join(indexed.read_documents(str(s.with_suffix("")))[0].tobytes() for s in shards)
    assert merged == outputs[2][0]
