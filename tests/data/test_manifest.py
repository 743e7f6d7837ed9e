"""Output manifests (``PREFIX.parts/manifest.json``): read as a blend weighted by tokens, alone
or inside a weighted blend, and refused in one line naming the file (and the part) when edited,
pointing outside their directory, malformed, or out of step with their parts' files; generated
corruptions (hypothesis, the ``DSCODER_FUZZ_PROFILE`` profiles of ``tests/conftest.py``)
never give anything else."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from megatron_dscoder.data import manifest as mf
from megatron_dscoder.data.blend import parse_blend
from megatron_dscoder.data.indexed import DataError, IndexedDatasetWriter

DOCS = ((5, 9, 30), (70, 4), (12, 12, 12, 40))
"""Document lengths of three parts."""


def write_parts(root: Path, docs: tuple[tuple[int, ...], ...] = DOCS) -> Path:
    """Parts written as a run writes them; every document opens with token 10 (not BOS)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(docs))
    parts = []
    for j, lengths in enumerate(docs):
        prefix = str(root / f"part-{j:05d}")
        tokens = rng.integers(11, 1000, size=sum(lengths)).astype(np.uint16)
        tokens[np.cumsum((0, *lengths[:-1]))] = 10
        writer = IndexedDatasetWriter(prefix, np.uint16)
        writer.add(tokens, np.array(lengths))
        writer.finalize()
        parts.append(mf.part_record(prefix, mf.file_digest(f"{prefix}.bin")))
    mf.write_manifest(str(root / "manifest.json"), "uint16", parts)
    return root / "manifest.json"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parts, written once (the writer fsyncs); each test edits a copy."""
    return write_parts(tmp_path_factory.mktemp("written") / "data.parts").parent


@pytest.fixture
def manifest(written: Path, tmp_path: Path) -> Path:
    mf._verified.clear()
    shutil.copytree(written, tmp_path / "data.parts")
    shutil.copy(written / "manifest.json", tmp_path / "data.parts" / "original.json")
    return tmp_path / "data.parts" / "manifest.json"


def edit(path: Path, change: Callable[[dict[str, Any]], None], redigest: bool = True) -> None:
    """Change the document; ``redigest``: as a careful forger would, with a fresh digest."""
    document = json.loads(path.read_text())
    change(document)
    if redigest and isinstance(document, dict) and document.get("algorithm") in mf.HASHES:
        document["digest"] = mf._self_digest(document, document["algorithm"])
    path.write_text(json.dumps(document))


def refused(path: Path, *blend: str) -> str:
    mf._verified.clear()
    with pytest.raises(DataError) as err:
        parse_blend(list(blend) or [str(path)])
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    return message


def test_parts_weighted_by_their_tokens(manifest: Path, tmp_path: Path) -> None:
    prefixes, weights = parse_blend([str(manifest)])
    assert prefixes == [str(manifest.parent / f"part-{j:05d}") for j in range(3)]
    assert weights == [float(sum(d)) for d in DOCS]
    os.symlink(manifest, tmp_path / "linked.json")  # the parts stay beside the real file
    assert parse_blend([str(tmp_path / "linked.json")]) == (prefixes, weights)
    assert mf.verify_manifest(str(manifest), full=True).parts[1].documents == 2


def test_a_manifest_inside_a_weighted_blend(manifest: Path, tmp_path: Path) -> None:
    """O05: ``0.3 A 0.7 M`` gives M's weight to its parts in proportion to their tokens."""
    other = write_parts(tmp_path / "other.parts", ((8, 8),)).parent / "part-00000"
    prefixes, weights = parse_blend(["0.3", str(other), "0.7", str(manifest)])
    total = sum(sum(d) for d in DOCS)
    assert prefixes[0] == str(other) and len(prefixes) == 4
    assert weights == pytest.approx([0.3] + [0.7 * sum(d) / total for d in DOCS])
    for bad in (["nan", str(manifest)], ["inf", str(manifest)], ["0.5", str(other), "-1", "x"]):
        with pytest.raises(DataError, match="positive and finite"):
            parse_blend(bad)
    for directory in ([str(manifest.parent)], ["1", str(other), "1", f"{manifest.parent}/"]):
        with pytest.raises(DataError, match=f"a directory; give its manifest, {manifest}"):
            parse_blend(directory)
    with pytest.raises(DataError, match="a directory; give PREFIX of PREFIX.bin/PREFIX.idx"):
        parse_blend([str(tmp_path)])
    # megatron-core caches its index arrays in PREFIX/cache/ beside PREFIX.bin/.idx when no
    # --data-cache-path is given: the second run on that prefix still reads it as a prefix.
    (other / "cache").mkdir(parents=True)
    assert parse_blend([str(other)]) == ([str(other)], None)
    assert parse_blend(["1", str(other), "1", str(manifest)])[0][0] == str(other)


def test_a_weighted_manifest_passes_a_launchs_checks(
    manifest: Path, tmp_path: Path, tiny_tokenizer_dir: Path
) -> None:
    """The blend as a launch reads it: flags, then the preflight's checks of every prefix
    (pairs, splits, BOS policy); the dataset builder takes ``parse_blend``'s result."""
    from megatron_dscoder.config.cli import parse
    from megatron_dscoder.training.resume import preflight

    other = write_parts(tmp_path / "other.parts", ((40, 40, 40),)).parent / "part-00000"
    argv = ["--model", "debug", "--tokenizer-model", str(tiny_tokenizer_dir), "--split", "100,0,0"]
    _, run = parse([*argv, "--data-path", "0.25", str(other), "0.75", str(manifest)], 1)
    start = preflight(run)
    prefixes, weights = parse_blend(list(start.run.data.data_path))
    total = sum(sum(d) for d in DOCS)
    assert prefixes[1:] == [str(manifest.parent / f"part-{j:05d}") for j in range(3)]
    assert weights == pytest.approx([0.25] + [0.75 * sum(d) / total for d in DOCS])
    edit(manifest, lambda d: d["parts"][0].update(tokens=1))
    mf._verified.clear()
    with pytest.raises(DataError, match="lists 3 documents, 1 uint16 tokens"):
        preflight(run)


CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], None], bool, str]] = {
    # name: (change, re-digested, what the one line says)
    "O03 tokens 1e12": (lambda d: d["parts"][1].update(tokens=10**12), False, "edited since"),
    "O03 tokens re-digested": (
        lambda d: d["parts"][1].update(tokens=10**12),
        True,
        "part 'part-00001': lists 2 documents, 1000000000000",
    ),
    "O04 parent prefix": (lambda d: d["parts"][0].update(prefix="../x"), True, "plain name"),
    "O04 absolute prefix": (lambda d: d["parts"][0].update(prefix="/etc/x"), True, "plain name"),
    "O09 tokens -5": (lambda d: d["parts"][2].update(tokens=-5), True, "tokens must be an"),
    "O07 tokens many": (lambda d: d["parts"][2].update(tokens="many"), True, "not 'many'"),
    "tokens true": (lambda d: d["parts"][2].update(tokens=True), True, "not True"),
    "tokens float": (lambda d: d["parts"][2].update(tokens=76.0), True, "not 76.0"),
    "O08 no parts": (lambda d: d.pop("parts"), True, "'parts' must be a non-empty list"),
    "parts an object": (lambda d: d.update(parts={"a": 1}), True, "'parts' must be"),
    "part a string": (lambda d: d["parts"].__setitem__(0, "part-00000"), True, "part 0 is"),
    "key missing": (lambda d: d["parts"][0].pop("idx_digest"), True, "part 0 is malformed"),
    "part twice": (lambda d: d["parts"].append(d["parts"][0]), True, "listed twice"),
    "version 1": (lambda d: d.update(version=1), True, "version-1 manifest carries no"),
    "version text": (lambda d: d.update(version="2"), True, "unsupported manifest version"),
    "no digest": (lambda d: d.pop("digest"), False, "needs 'digest'"),
    "algorithm list": (lambda d: d.update(algorithm=["x"]), False, "needs 'digest'"),
    "dtype other": (lambda d: d.update(dtype="float64"), True, "dtype must be"),
    "dtype swapped": (lambda d: d.update(dtype="int32"), True, "its .idx has"),
    "documents edited": (lambda d: d["parts"][0].update(documents=4), True, "lists 4 documents"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_edited_or_malformed_manifests_are_refused(manifest: Path, name: str) -> None:
    change, redigest, says = CORRUPTIONS[name]
    edit(manifest, change, redigest)
    assert says in refused(manifest)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "not a readable manifest (JSONDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "not a readable manifest (RecursionError"),
        (b"\xff\xfe", "not a readable manifest"),
        (b"[]", "not a megatron-dscoder-manifest file"),
        (b'{"format": "megatron-dscoder-manifest", "version": 2}', "needs 'digest'"),
    ],
)
def test_unreadable_manifests_are_refused(manifest: Path, content: bytes, says: str) -> None:
    manifest.write_bytes(content)
    assert says in refused(manifest)
    assert says in refused(manifest, "1", str(manifest.parent / "part-00000"), "1", str(manifest))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_parts_out_of_step_with_the_manifest(manifest: Path, written: Path) -> None:
    part = manifest.parent / "part-00001"
    _flip(Path(f"{part}.idx"), 40)  # a length inside the index: same size
    assert "part 'part-00001'" in refused(manifest) and "checksum mismatch" in refused(manifest)
    Path(f"{part}.idx").unlink()
    assert "part-00001.idx is missing" in refused(manifest)
    shutil.copy(written / "part-00001.idx", f"{part}.idx")
    with open(manifest.parent / "part-00002.bin", "ab") as f:
        f.write(b"\0\0")
    assert "part-00002.bin has 154 bytes, 152 when written" in refused(manifest)


def test_a_symlink_out_of_the_directory_is_refused(manifest: Path, tmp_path: Path) -> None:
    """O04: a part's file that leads outside the manifest's directory (a same-content copy)."""
    outside = tmp_path / "elsewhere.bin"
    shutil.copy(manifest.parent / "part-00000.bin", outside)
    (manifest.parent / "part-00000.bin").unlink()
    os.symlink(outside, manifest.parent / "part-00000.bin")
    assert "leads outside the manifest's directory" in refused(manifest)


def test_bin_checksums_are_verified_on_request(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped ``.bin`` byte passes the checks of every load (sizes, ``.idx``) and is found by
    the full verification, ``python -m megatron_dscoder.data.manifest``."""
    assert mf.main([str(manifest)]) == 0
    assert capsys.readouterr().out == f"{manifest}: 3 parts, 194 tokens: verified\n"
    _flip(manifest.parent / "part-00001.bin", 3)
    mf._verified.clear()
    assert len(parse_blend([str(manifest)])[0]) == 3
    assert mf.main([str(manifest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {manifest}: part 'part-00001'") and "checksum mismatch" in err
    assert err.count("\n") == 1
    assert mf.main([]) == 2 and mf.main(["--full"]) == 2
    assert mf.main([str(manifest), str(manifest.parent)]) == 2


_TEXT = st.sampled_from(["", ".", "..", "../part-00000", "/etc/passwd", "part-00001", "a/b", "x"])
_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3)
)
_KEYS = st.sampled_from(["format", "version", "dtype", "algorithm", "parts", "digest", "extra"])
_PART_KEYS = st.sampled_from(sorted(mf._INTS | mf._STRS | {"extra"}))


@st.composite
def _corruption(draw: st.DrawFn) -> tuple[str, Any, bool, int | None]:
    """(where, new value or a deletion, re-digest, or a byte position to cut the text at)."""
    where = draw(st.one_of(_KEYS, st.tuples(st.integers(0, 3), _PART_KEYS)))
    value = draw(st.one_of(st.just(_DELETE), _JSON))
    return where, value, draw(st.booleans()), draw(st.none() | st.integers(0, 2000))


_DELETE = object()


def _apply(document: dict[str, Any], where: Any, value: Any) -> None:
    target = document
    if isinstance(where, tuple):
        index, where = where
        parts = document.get("parts")
        if not isinstance(parts, list):
            return  # an earlier corruption replaced the list
        if index >= len(parts) or not isinstance(parts[index], dict):
            parts[min(index, len(parts)) : index + 1] = [{} if value is _DELETE else value]
            return
        target = parts[index]
    if value is _DELETE:
        target.pop(where, None)
    else:
        target[where] = value


@given(corruptions=st.lists(_corruption(), min_size=1, max_size=3))
def test_corrupted_manifests_give_one_line_or_a_correct_blend(
    manifest: Path, corruptions: list[tuple[str, Any, bool, int | None]]
) -> None:
    """Any corruption of the document (shape, types, numbers, paths, a cut or a re-digest): a
    one-line error naming the file, or the true blend; never another exception."""
    original = json.loads((manifest.parent / "original.json").read_text())
    document = json.loads(json.dumps(original))
    text = None
    for where, value, redigest, cut in corruptions:
        _apply(document, where, value)
        if redigest and str(document.get("algorithm")) in mf.HASHES:
            document["digest"] = mf._self_digest(document, document["algorithm"])
        text = json.dumps(document)
        if cut is not None and cut < len(text):
            text = text[:cut]
    manifest.write_text(text or "")
    truth = [float(sum(d)) for d in DOCS]
    for blend in ([str(manifest)], ["2", str(manifest.parent / "part-00000"), "1", str(manifest)]):
        mf._verified.clear()
        try:
            prefixes, weights = parse_blend(blend)
        except DataError as err:
            assert str(err).startswith(str(manifest)) and "\n" not in str(err), str(err)
            event("refused")
            continue
        event("accepted")
        parts = prefixes[-3:]
        assert parts == [str(manifest.parent / f"part-{j:05d}") for j in range(3)]
        if len(blend) == 1:
            assert weights == truth
        else:
            assert weights == pytest.approx([2.0] + [t / sum(truth) for t in truth])
