"""Exactly right with DeepSeek-Coder's published tokenizer structure (built here, not downloaded).

The structure: 13 Latin-1 characters as non-special added tokens after the BPE ids, then the
nine DeepSeek strings with only BOS and EOS flagged special, an empty ``Sequence`` normalizer
and a ``ByteLevel`` post-processor. Source text containing any added token's literal text must
be encoded as text; the only control ids are those the pipeline inserts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megatron_dscoder.preprocess.records import with_path_comment
from megatron_dscoder.preprocess.stages.encode import encode_documents
from megatron_dscoder.tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    newline_safe,
    special_token_ids,
    text_tokenizer,
)
from tests.conftest import stdlib_texts
from tests.preprocess.preprocess_helpers import (
    LATIN1_ADDED,
    decode,
    read_documents,
    run,
    write_jsonl,
)

LITERALS = [*LATIN1_ADDED, *SPECIAL_TOKENS]
STDLIB = (
    "difflib.py",
    "textwrap.py",
    "string.py",
    "argparse.py",
    "dataclasses.py",
    "ast.py",
    "typing.py",
    "inspect.py",
    "tokenize.py",
    "pathlib.py",
    "json/decoder.py",
)


def literal_file(i: int) -> str:
    """Code that writes every added token's literal text, different per ``i``."""
    listed = ", ".join(repr(t) for t in LITERALS)
    inline = "".join(LITERALS)
    return (
        f"# tokenizer helper number {i}: {' '.join(f'word{i * 7 + k}' for k in range(12))}\n"
        f"TOKENS_{i} = [{listed}]\n\n\ndef glued_{i}() -> str:\n    return {inline!r}\n"
        + "".join(f"x{i}_{k} = '{LITERALS[(i + k) % len(LITERALS)]}' * {k}\n" for k in range(30))
    )


def test_text_tokenizer_equals_transformers_on_normal_text(deepseek_tokenizer_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    original = load_tokenizer(deepseek_tokenizer_dir)
    hf = PreTrainedTokenizerFast(tokenizer_object=original)
    texts = [t for t in stdlib_texts(STDLIB) if not any(lit in t for lit in LITERALS)]
    assert len(texts) >= 9
    ours = text_tokenizer(original).encode_batch_fast(texts, add_special_tokens=False)
    for text, encoding in zip(texts, ours, strict=True):
        assert encoding.ids == hf.encode(text, add_special_tokens=False)


def test_literals_encode_as_text_and_chunking_is_active(deepseek_tokenizer_dir: Path) -> None:
    original = load_tokenizer(deepseek_tokenizer_dir)
    assert original.normalizer is not None  # the empty Sequence
    tok = text_tokenizer(original)
    assert newline_safe(tok)
    text = literal_file(0) * 40
    control = set(range(original.get_vocab_size(with_added_tokens=False), 1 << 20))
    whole = tok.encode(text, add_special_tokens=False).ids
    assert not control & set(whole)
    assert original.decode(whole, skip_special_tokens=False) == text
    for chunk in (100, 4096):
        encoded = encode_documents([[text]], tok, eos=1, dtype=np.int32, chunk_chars=chunk)
        assert encoded.tokens.tolist() == [*whole, 1]


def test_fim_frame_is_intact_with_literals_in_code(
    tmp_path: Path, deepseek_tokenizer_dir: Path
) -> None:
    records = [{"text": literal_file(i), "repo": f"r{i}", "path": f"tok{i}.py"} for i in range(6)]
    data = write_jsonl(tmp_path / "in.jsonl", records)
    stats = run(
        tmp_path,
        [data],
        deepseek_tokenizer_dir,
        fim_rate=1.0,
        repo_level=False,
        dedup=None,
        decontam=None,
    )
    assert stats["bos"] is False and stats["fim"]["psm"] == 6
    tok = load_tokenizer(deepseek_tokenizer_dir)
    ids = special_token_ids(tok, ("fim_begin", "fim_hole", "fim_end", "eos"))
    added = {tok.token_to_id(t) for t in LITERALS}
    docs = read_documents(tmp_path / "out" / "data")
    expected = sorted(with_path_comment("python", r["path"], r["text"]) for r in records)
    decoded = []
    for doc in docs:
        d = doc.tolist()
        for sentinel in (ids.fim_begin, ids.fim_hole, ids.fim_end, ids.eos):
            assert d.count(sentinel) == 1
        assert d[0] == ids.fim_begin and d[-1] == ids.eos
        inserted = {ids.fim_begin, ids.fim_hole, ids.fim_end, ids.eos}
        assert not (added - inserted) & set(d)  # no <pad>/<|User|>/.../Latin-1 ids, no BOS
        hole, end = d.index(ids.fim_hole), d.index(ids.fim_end)
        prefix, suffix, middle = d[1:hole], d[hole + 1 : end], d[end + 1 : -1]
        decoded.append("".join(decode(tok, np.array(p)) for p in (prefix, middle, suffix)))
    assert sorted(decoded) == expected


def test_bos_is_an_explicit_choice_for_both_tokenizer_styles(
    tmp_path: Path, tiny_tokenizer_dir: Path, deepseek_tokenizer_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": literal_file(i)} for i in range(3)])
    for name, tok_dir in (("ours", tiny_tokenizer_dir), ("deepseek", deepseek_tokenizer_dir)):
        bos = load_tokenizer(tok_dir).token_to_id(SPECIAL_TOKENS[0])
        for choice in (False, True):
            prefix = tmp_path / f"{name}-{choice}" / "data"
            stats = run(
                tmp_path,
                [data],
                tok_dir,
                prefix=prefix,
                bos=choice,
                fim_rate=0.0,
                dedup=None,
                decontam=None,
            )
            assert stats["bos"] is choice and stats["bos_id"] == (bos if choice else None)
            for doc in read_documents(prefix):
                d = doc.tolist()
                assert d.count(bos) == int(choice) and (d[0] == bos) is choice
