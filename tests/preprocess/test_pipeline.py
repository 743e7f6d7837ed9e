"""End-to-end tests: real tokenizer, real files, megatron-core reading the output."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from megatron_dscoder.data.indexed import EmptyOutputError
from megatron_dscoder.tokenizer import (
    EOS,
    FIM_BEGIN,
    FIM_END,
    FIM_HOLE,
    MissingSpecialTokensError,
    load_tokenizer,
    special_token_ids,
    vocab_size,
)
from tests.preprocess.preprocess_helpers import decode, read_documents, run, tokenizer, write_jsonl

PLANTED = {
    "pkg/a.py": "from pkg import b\n\n\ndef alpha():\n    return b.beta() + 1\n",
    "pkg/b.py": "import pkg.c\n\n\ndef beta():\n    return pkg.c.gamma() * 2\n",
    "pkg/c.py": "from pkg.d import delta\n\n\ndef gamma():\n    return delta() - 3\n",
    "pkg/d.py": "from . import c\n\n\ndef delta():\n    return len(c.__name__)\n",
}


def python_file(i: int) -> str:
    return (
        f"def function_{i}(value):\n    # compute something useful here\n    return value + {i}\n"
    )


def js_records(n: int, repo: str = "web/app") -> list[dict]:
    return [
        {
            "text": f"function handler{i}(event) {{\n  return event.value + {i};\n}}\n",
            "repo": repo,
            "path": f"src/h{i}.js",
            "lang": "JavaScript",
        }
        for i in range(n)
    ]


def test_planted_repository_is_one_sample_in_dependency_order(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    repo = "acme/planted"
    records = [{"text": t, "repo": repo, "path": p, "lang": "Python"} for p, t in PLANTED.items()]
    other = {"text": python_file(1), "repo": "other/repo", "path": "x.py", "lang": "Python"}
    scrambled = [records[0], other, records[3], records[1], records[2]]
    write_jsonl(tmp_path / "in.jsonl", scrambled)
    stats = run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, fim_rate=0.0)

    tok = tokenizer(tiny_tokenizer_dir)
    texts = [decode(tok, doc) for doc in read_documents(tmp_path / "out" / "data")]
    assert all(t.endswith(EOS) for t in texts)
    planted = [t for t in texts if "# pkg/" in t]
    assert len(planted) == 1, "the connected component must be a single sample"
    sample = planted[0]
    pos = {p: sample.index(f"# {p}\n") for p in PLANTED}
    assert max(pos["pkg/c.py"], pos["pkg/d.py"]) < pos["pkg/b.py"] < pos["pkg/a.py"]
    assert sample.startswith(("# pkg/c.py\n", "# pkg/d.py\n"))
    for path, text in PLANTED.items():
        assert f"# {path}\n{text}" in sample
    assert stats["documents_out"] == 2 and stats["files_out"] == 5
    assert stats["repo_level"]["dependency_edges"] == 4


def test_fim_rate_half_in_psm_order_and_reconstructs(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    records = js_records(2000)
    write_jsonl(tmp_path / "in.jsonl", records)
    stats = run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, fim_rate=0.5)

    tok = tokenizer(tiny_tokenizer_dir)
    ids = special_token_ids(tok, ("eos", "fim_begin", "fim_hole", "fim_end"))
    docs = read_documents(tmp_path / "out" / "data")
    assert len(docs) == 2000
    fim_docs = [d for d in docs if ids.fim_begin in d]
    assert abs(len(fim_docs) / len(docs) - 0.5) <= 0.05
    assert stats["fim"] == {"psm": len(fim_docs), "spm": 0, "plain": 2000 - len(fim_docs)}
    originals = {f"// {r['path']}\n{r['text']}" for r in records}
    for doc in fim_docs:
        assert doc[0] == ids.fim_begin and doc[-1] == ids.eos
        hole, end = (np.flatnonzero(doc == s) for s in (ids.fim_hole, ids.fim_end))
        assert len(hole) == 1 and len(end) == 1 and hole[0] < end[0]
        prefix = decode(tok, doc[1 : hole[0]])
        suffix = decode(tok, doc[hole[0] + 1 : end[0]])
        middle = decode(tok, doc[end[0] + 1 : -1])
        assert prefix + middle + suffix in originals


def test_spm_layout(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", js_records(50))
    stats = run(
        tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, fim_rate=1.0, fim_spm_rate=1.0
    )
    ids = special_token_ids(tokenizer(tiny_tokenizer_dir), ("fim_begin", "fim_hole", "fim_end"))
    docs = read_documents(tmp_path / "out" / "data")
    assert stats["fim"]["spm"] == 50
    assert all(d[0] == ids.fim_begin and d[1] == ids.fim_hole for d in docs)
    assert all(np.count_nonzero(d == ids.fim_end) == 1 for d in docs)


def mixed_corpus(tmp_path: Path) -> Path:
    records = []
    for r in range(12):
        for f in range(6):
            text = f"from pkg import m{(f + 1) % 6}\n\n" + python_file(r * 10 + f)
            records.append(
                {"text": text, "repo": f"org/r{r}", "path": f"pkg/m{f}.py", "lang": "Python"}
            )
    records += js_records(40)
    order = np.random.default_rng(0).permutation(len(records))
    return write_jsonl(tmp_path / "in.jsonl", [records[i] for i in order])


def test_jsonl_gz_zst_parquet_and_the_stack_fields_give_the_same_output(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ours = [
        {"text": t, "repo": "acme/planted", "path": p, "lang": "Python"} for p, t in PLANTED.items()
    ]
    names = {"text": "content", "repo": "max_stars_repo_name", "path": "max_stars_repo_path"}
    rows = [{names.get(k, k): v for k, v in r.items()} for r in ours + js_records(20)]
    inputs = [write_jsonl(tmp_path / f"in{suffix}", rows) for suffix in (".jsonl", ".gz", ".zst")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=7)
    inputs.append(tmp_path / "in.parquet")
    outputs = set()
    for i, path in enumerate(inputs):
        stats = run(tmp_path, [path], tiny_tokenizer_dir, prefix=tmp_path / str(i) / "d", seed=5)
        assert stats["documents_out"] == 21 and stats["files_out"] == 24
        outputs.add((tmp_path / str(i) / "d.bin").read_bytes())
    assert len(outputs) == 1


def test_output_identical_for_any_worker_count(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    corpus = mixed_corpus(tmp_path)
    small = {"task_bytes": 2048, "region_bytes": 1000, "fim_rate": 0.5, "seed": 7}
    outputs = []
    for workers in (1, 2):
        prefix = tmp_path / f"w{workers}" / "data"
        stats = run(tmp_path, [corpus], tiny_tokenizer_dir, workers=workers, prefix=prefix, **small)
        outputs.append([Path(f"{prefix}.{ext}").read_bytes() for ext in ("bin", "idx")])
        assert stats["repo_level"]["spill_resplits"] > 0  # the shuffle's re-split path ran
    assert outputs[0] == outputs[1]
    other_seed = run(tmp_path, [corpus], tiny_tokenizer_dir, **{**small, "seed": 8})
    assert Path(tmp_path / "out" / "data.bin").read_bytes() != outputs[0][0]
    assert other_seed["documents_out"] == 12 + 40


def test_bad_input_is_skipped_and_counted(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    good = js_records(3)
    jsonl = write_jsonl(
        tmp_path / "in.jsonl",
        good,
        raw_lines=[
            b'{"text": "unterminated',  # malformed_json
            b'["a", "list"]',  # not_an_object
            b'{"content_missing": "x", "repo": "r"}',  # missing_text
            b'{"text": 42}',  # missing_text (not a string)
            b'{"text": "caf\xe9 latin-1"}',  # invalid_utf8
            b'{"text": "bin\\u0000ary"}',  # binary
            b'{"text": "   \\n  "}',  # empty
            b'{"text": "' + b"x" * (2 << 20) + b'"}',  # record_too_large (limit 1 MiB)
        ],
    )
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    checkouts = tmp_path / "checkouts" / "proj"
    checkouts.mkdir(parents=True)
    (checkouts / "ok.py").write_text(python_file(5))
    (checkouts / "blob.c").write_bytes(b"\x7fELF\x00\x00binary")
    (checkouts / "latin.py").write_bytes(b"# caf\xe9\n")
    (checkouts / "empty.py").write_bytes(b"")
    (checkouts / "image.png").write_bytes(b"\x89PNG")
    inputs = [
        jsonl,
        tmp_path / "empty.jsonl",
        tmp_path / "corrupt.jsonl.gz",
        tmp_path / "checkouts",
    ]
    stats = run(tmp_path, inputs, tiny_tokenizer_dir, max_record_mb=1.0, fim_rate=0.5)

    assert stats["bad_input"] == {
        "binary": 2,
        "empty": 2,
        "empty_file": 1,
        "invalid_utf8": 2,
        "malformed_json": 1,
        "missing_text": 2,
        "not_an_object": 1,
        "record_too_large": 1,
        "unreadable_file": 1,
    }
    assert stats["skipped"] == {"unknown_language": 1}
    assert stats["documents_out"] == 4 and len(read_documents(tmp_path / "out" / "data")) == 4


def test_a_100mb_line_is_skipped_with_bounded_memory(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "' + b"a" * (100 << 20) + b'"}\n')
        f.write(b'{"text": "int main(void) { return 0; }\\n", "path": "m.c"}\n')
    tracemalloc.start()
    try:
        stats = run(tmp_path, [path], tiny_tokenizer_dir, fim_rate=0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["bad_input"] == {"record_too_large": 1}
    assert stats["documents_out"] == 1
    assert peak < 48 << 20, f"peak traced memory {peak / 2**20:.0f} MiB"


def test_missing_fim_sentinels_fail_before_any_work(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)
    doc = tok.to_str()
    for name in (FIM_BEGIN, FIM_HOLE, FIM_END):
        doc = doc.replace(f'"{name}"', f'"{name.replace("fim", "xim")}"')
    no_fim = tmp_path / "no_fim"
    no_fim.mkdir()
    (no_fim / "tokenizer.json").write_text(doc, "utf-8")
    write_jsonl(tmp_path / "in.jsonl", js_records(3))
    with pytest.raises(MissingSpecialTokensError) as err:
        run(tmp_path, [tmp_path / "in.jsonl"], no_fim, fim_rate=0.5)
    assert set(err.value.missing) == {FIM_BEGIN, FIM_HOLE, FIM_END}
    assert all(s in str(err.value) for s in (FIM_BEGIN, FIM_HOLE, FIM_END))
    assert not (tmp_path / "out").exists(), "nothing may be written before the check"
    stats = run(tmp_path, [tmp_path / "in.jsonl"], no_fim, fim_rate=0.0)
    assert stats["documents_out"] == 3


def test_no_documents_leaves_no_output_pair(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [], raw_lines=[b"not json"])
    stats_path = tmp_path / "stats.json"
    with pytest.raises(EmptyOutputError):
        run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, stats_json=str(stats_path))
    assert os.listdir(tmp_path / "out") == []
    assert '"malformed_json": 1' in stats_path.read_text()


def test_failed_run_keeps_only_partial_files_out_of_the_way(
    tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", js_records(5))
    with pytest.raises(RuntimeError, match="hook failed"):
        run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, sample_hooks=(failing_hook,))
    assert sorted(os.listdir(tmp_path / "out")) == []


def failing_hook(samples: list, stats: object) -> list:
    raise RuntimeError("hook failed")


def drop_odd_hook(samples: list, stats: object) -> list:
    """A stand-in for near-dedup: keeps samples whose file number is even."""
    return [
        s for s in samples if int(s.paths[0].removeprefix("src/h").removesuffix(".js")) % 2 == 0
    ]


def test_sample_hooks_run_between_samples_and_fim(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", js_records(10))
    stats = run(
        tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, sample_hooks=(drop_odd_hook,)
    )
    assert stats["documents_out"] == 5 and sum(stats["fim"].values()) == 5


def test_gpt_dataset_reads_the_output(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    write_jsonl(tmp_path / "in.jsonl", js_records(300))
    run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir)
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids = special_token_ids(tok, ("eos", "pad"))

    class Adapter:  # the attributes megatron-core's datasets read from a tokenizer
        eod, pad, vocab_size = ids.eos, ids.pad, vocab_size(tok)
        unique_identifiers = {"class": "tiny", "path": str(tiny_tokenizer_dir)}

    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=64,
        blend=([str(tmp_path / "out" / "data")], None),
        split="100,0,0",
        tokenizer=Adapter(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
    )
    train, _, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [20, 0, 0], lambda: True, config
    ).build()
    sample = train[0]
    assert sample["tokens"].shape == (64,) and sample["labels"].shape == (64,)
    assert int(sample["tokens"].max()) < vocab_size(tok)
    assert ids.eos in set(sample["tokens"].tolist()) | set(sample["labels"].tolist())


def test_a_failing_repository_falls_back_to_single_files(
    tmp_path: Path, tiny_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from megatron_dscoder.preprocess import partition

    real = partition.repo_samples

    def fragile(repo: str, *args: object, **kwargs: object) -> list:
        if repo == "acme/planted":
            raise RecursionError("pathological repository")
        return real(repo, *args, **kwargs)

    monkeypatch.setattr(partition, "repo_samples", fragile)
    records = [{"text": t, "repo": "acme/planted", "path": p} for p, t in PLANTED.items()]
    records.append({"text": python_file(2), "repo": "fine/repo", "path": "ok.py"})
    write_jsonl(tmp_path / "in.jsonl", records)
    stats = run(tmp_path, [tmp_path / "in.jsonl"], tiny_tokenizer_dir, fim_rate=0.0)
    assert stats["repo_level"]["ordering_errors"] == 1
    assert stats["documents_out"] == 5 and stats["files_out"] == 5
