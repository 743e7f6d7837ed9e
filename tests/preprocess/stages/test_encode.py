"""Batched tokenisation: EOS, sentinels, chunking that never changes the tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from megatron_dscoder.preprocess.stages.encode import _encode, encode_documents, split_at_newlines
from megatron_dscoder.preprocess.stages.line_encode import LineCut, encode_lines, line_cut
from megatron_dscoder.tokenizer import (
    EOT,
    PAD,
    load_tokenizer,
    newline_safe,
    special_token_ids,
    text_tokenizer,
)
from tests.preprocess.preprocess_helpers import stdlib_text


def test_chunked_encoding_equals_whole_text_encoding(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    assert newline_safe(tok)
    text = stdlib_text("difflib.py", "textwrap.py") + "\r\n\n  trailing  "
    whole = tok.encode(text, add_special_tokens=False).ids
    for chunk in (64, 1000, 10**9):
        encoded = encode_documents([[text]], tok, eos=7, dtype=np.uint16, chunk_chars=chunk)
        assert encoded.tokens.tolist() == [*whole, 7]
    assert "".join(split_at_newlines(text, 100)) == text


def test_repeated_lines_are_encoded_once_with_the_same_tokens(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    texts = [
        "import os\n\n\ndef f():\n    return 1\n",
        "import os\r\n\r\ndef g():\n    return 1\n    return 1",  # no final newline
        "\n\n    return 1\n",
        stdlib_text("textwrap.py"),
    ]
    spy = RecordingTokenizer(tok)
    encoded = encode_documents([[t] for t in texts], spy, eos=7, dtype=np.uint16)
    whole = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    assert encoded.tokens.tolist() == [i for ids in whole for i in (*ids, 7)]
    assert encoded.lengths.tolist() == [len(ids) + 1 for ids in whole]
    assert sum(spy.batches) < sum(map(len, texts))  # repeated lines were encoded once


def test_line_encoding_checks_its_newline_token(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    cut = line_cut(tok, 64)
    assert cut is not None and line_cut(tok, None) is None
    batch = ["a = 1\n\nb = 2\n", "a = 1\nend"]
    whole = [tok.encode(t, add_special_tokens=False).ids for t in batch]
    assert [a.tolist() for a in _encode(batch, tok, np.dtype(np.uint16), cut)] == whole
    wrong = LineCut(tok.encode("a", add_special_tokens=False).ids[0], 64)
    assert encode_lines(batch, tok, np.dtype(np.uint16), wrong) is None  # not the newline
    assert [a.tolist() for a in _encode(batch, tok, np.dtype(np.uint16), wrong)] == whole


def test_documents_pieces_and_lengths(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    docs = [["x = 1\n"], [5, "ab", 6, "", 7, "cd"], []]
    encoded = encode_documents(docs, tok, eos=9, dtype=np.int32, batch_chars=1)
    first = tok.encode("x = 1\n", add_special_tokens=False).ids
    assert encoded.tokens[: len(first) + 1].tolist() == [*first, 9]
    assert encoded.lengths.sum() == encoded.tokens.size and encoded.tokens.dtype == np.int32
    assert encoded.lengths[2] == 1 and encoded.tokens[-1] == 9
    second = encoded.tokens[encoded.lengths[0] : encoded.lengths[0] + encoded.lengths[1]].tolist()
    ab, cd = (tok.encode(s, add_special_tokens=False).ids for s in ("ab", "cd"))
    assert second == [5, *ab, 6, 7, *cd, 9]


def test_special_token_strings_in_code_stay_text(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    ids = special_token_ids(tok, ("pad", "eot"))
    encoded = encode_documents([[f"s = '{PAD}' + '{EOT}'\n"]], tok, eos=3, dtype=np.uint16)
    assert ids.pad not in encoded.tokens and ids.eot not in encoded.tokens
    assert tok.decode(encoded.tokens[:-1].tolist()) == f"s = '{PAD}' + '{EOT}'\n"


def test_gpt2_style_pretokenizer_is_not_chunked() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert not newline_safe(tok)


class RecordingTokenizer:
    """The real tokenizer, recording the characters of each batch it is given."""

    def __init__(self, tok: object) -> None:
        self.tok = tok
        self.batches: list[int] = []

    def encode_batch_fast(self, texts: list[str], add_special_tokens: bool) -> list:
        self.batches.append(sum(map(len, texts)))
        return self.tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)


def test_a_huge_document_is_encoded_in_bounded_batches(tiny_tokenizer_dir: Path) -> None:
    tok = text_tokenizer(load_tokenizer(tiny_tokenizer_dir))
    huge = stdlib_text("difflib.py") * 4  # ~320k characters in one document
    spy = RecordingTokenizer(tok)
    encoded = encode_documents([["small\n"], [huge], ["tail\n"]], spy, 0, np.uint16, 50_000, 4096)
    assert len(spy.batches) >= 6 and max(spy.batches) < 50_000 + 4096 + 200
    whole = [tok.encode(t, add_special_tokens=False).ids for t in ("small\n", huge, "tail\n")]
    assert encoded.tokens.tolist() == [*whole[0], 0, *whole[1], 0, *whole[2], 0]
    assert encoded.lengths.tolist() == [len(w) + 1 for w in whole]
