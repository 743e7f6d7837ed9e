"""DeepSeek-Coder tokenizer: special-token strings, loading an HF tokenizer directory, id lookup.

Everything downstream (preprocessing, training, evaluation) finds special tokens *by their
strings*, never by hard-coded ids, so any Hugging Face tokenizer directory works: the one
``tools/train_tokenizer.py`` writes, or DeepSeek's published ``deepseek-coder-*-base`` one
(where EOS happens to be id 32014). The bars in the strings are U+FF5C (FULLWIDTH VERTICAL
LINE) and the blank is U+2581 (LOWER ONE EIGHTH BLOCK), exactly as DeepSeek spells them.

This module imports neither torch nor transformers (transformers is only imported lazily, for a
directory that has no ``tokenizer.json``), so data workers start fast.

Usage::

    from megatron_dscoder.tokenizer import load_tokenizer, special_token_ids, vocab_size

    tok = load_tokenizer("path/to/tokenizer_dir")       # a tokenizers.Tokenizer
    ids = special_token_ids(tok, require=("eos", "pad"))  # raises, naming what is missing
    ids.eos, ids.pad, vocab_size(tok)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, pre_tokenizers

from megatron_dscoder.errors import UserError

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
FIM_HOLE = "<\uff5cfim\u2581hole\uff5c>"
FIM_BEGIN = "<\uff5cfim\u2581begin\uff5c>"
FIM_END = "<\uff5cfim\u2581end\uff5c>"
PAD = "<pad>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
EOT = "<|EOT|>"

#: DeepSeek-Coder's special tokens, in the order of their ids in the published tokenizer
#: (32013 ... 32021 there; our trained tokenizer appends them after its BPE vocabulary too).
SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    EOS,
    FIM_HOLE,
    FIM_BEGIN,
    FIM_END,
    PAD,
    USER,
    ASSISTANT,
    EOT,
)
FIM_TOKENS: tuple[str, ...] = (FIM_BEGIN, FIM_HOLE, FIM_END)

#: The pre-tokenizer split rules of DeepSeek-Coder (as in llama.cpp's DEEPSEEK_CODER entry):
#: newlines alone, letters with one optional leading space, punctuation likewise, CJK/Hangul runs,
#: and every digit on its own. Applied in this order, then byte-level mapping.
PRE_TOKENIZER_SPLITS: tuple[str, ...] = (
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    r"\p{N}",
)


class MissingSpecialTokensError(UserError, ValueError):
    """A tokenizer lacks special tokens that the caller needs; ``missing`` lists their strings."""

    def __init__(
        self, missing: Iterable[str], source: str = "tokenizer", purpose: str = ""
    ) -> None:
        self.missing = tuple(missing)
        names = ", ".join(repr(s) for s in self.missing)
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{source} lacks the special token(s) {names}{why}")


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of DeepSeek-Coder's special tokens in one tokenizer; None where the token is absent."""

    bos: int | None
    eos: int | None
    fim_hole: int | None
    fim_begin: int | None
    fim_end: int | None
    pad: int | None
    user: int | None
    assistant: int | None
    eot: int | None

    @property
    def has_fim(self) -> bool:
        """True when all three FIM sentinels exist."""
        return None not in (self.fim_begin, self.fim_hole, self.fim_end)


#: Field of :class:`SpecialTokenIds` -> token string.
TOKEN_OF_FIELD: dict[str, str] = dict(
    zip((f.name for f in fields(SpecialTokenIds)), SPECIAL_TOKENS, strict=True)
)


def special_token_ids(
    tok: Tokenizer,
    require: Iterable[str] = ("eos",),
    source: str = "tokenizer",
    purpose: str = "",
) -> SpecialTokenIds:
    """Resolve every DeepSeek-Coder special token of ``tok`` by string.

    Args:
        tok: the tokenizer.
        require: field names of :class:`SpecialTokenIds` that must exist (e.g. ``"eos"``,
            ``"fim_begin"``); all missing ones are reported together.
        source: how to name the tokenizer in the error (e.g. its path).
        purpose: what the required tokens are for, added to the error message.

    Raises:
        MissingSpecialTokensError: naming every required token string that ``tok`` lacks.
    """
    ids = {name: tok.token_to_id(text) for name, text in TOKEN_OF_FIELD.items()}
    unknown = [name for name in require if name not in ids]
    if unknown:
        raise KeyError(f"unknown special-token field(s) {unknown}; known: {list(ids)}")
    missing = [TOKEN_OF_FIELD[name] for name in require if ids[name] is None]
    if missing:
        raise MissingSpecialTokensError(missing, source=source, purpose=purpose)
    return SpecialTokenIds(**ids)


#: Files from which transformers can build a tokenizer when ``tokenizer.json`` is absent.
SLOW_TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer offline from an HF tokenizer directory or a ``tokenizer.json`` file.

    A directory without ``tokenizer.json`` (e.g. only a SentencePiece model) is loaded with
    ``transformers.AutoTokenizer(local_files_only=True)`` and its fast backend is returned.
    """
    p = Path(path)
    for file in (p, p / "tokenizer.json"):
        if file.is_file():
            try:
                return Tokenizer.from_file(str(file))
            except Exception as err:  # the tokenizers library raises a bare Exception
                raise ValueError(f"{file}: not a readable tokenizer.json ({err})") from err
    if not p.is_dir():
        raise FileNotFoundError(f"no tokenizer directory or tokenizer.json at {p}")
    slow = sorted(f for f in SLOW_TOKENIZER_FILES if (p / f).is_file())
    if not slow:
        raise FileNotFoundError(
            f"{p} has no tokenizer.json (nor a vocabulary file to convert): give the directory "
            "that tools/train_tokenizer.py or an HF model export wrote"
        )
    from transformers import AutoTokenizer  # lazy: slow import, only for exotic directories

    try:
        hf = AutoTokenizer.from_pretrained(str(p), local_files_only=True, use_fast=True)
    except (ValueError, OSError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{p} has no tokenizer.json and its {', '.join(slow)} could not be converted ({first})"
        ) from err
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{p}: transformers could not build a fast tokenizer from it")
    return backend


def vocab_size(tok: Tokenizer) -> int:
    """Number of embedding rows the tokenizer needs: one more than its largest id."""
    largest = max(tok.get_vocab(with_added_tokens=True).values(), default=-1)
    return max(tok.get_vocab_size(with_added_tokens=True), largest + 1)


def deepseek_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The DeepSeek-Coder pre-tokenizer: :data:`PRE_TOKENIZER_SPLITS`, then byte-level."""
    splits = [pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in PRE_TOKENIZER_SPLITS]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return pre_tokenizers.Sequence([*splits, byte_level])


# ---- the text-only copy: added tokens' literal text encoded as ordinary text ----

_PROBE = "x = 1\n\n\tdef f():\n  \n    return 2\r\n// a\u00e9\n\n\n"


def text_tokenizer(tok: Tokenizer) -> Tokenizer:
    """A copy of ``tok`` that encodes every added token's literal text as ordinary text.

    All added tokens are flagged special in the copy and ``encode_special_tokens`` is set, so
    the added-vocabulary matcher skips them all and the whole text goes through the normalizer,
    pre-tokenizer and BPE model. Whatever flags the original uses (DeepSeek-Coder's flags only
    BOS and EOS special), the copy never emits an added token's id for text.
    """
    state = json.loads(tok.to_str())
    for token in state.get("added_tokens") or ():
        token["special"] = True
    copy = Tokenizer.from_str(json.dumps(state))
    copy.encode_special_tokens = True
    return copy


def _identity_normalizer(state: dict[str, Any] | None) -> bool:
    """True for no normalizer or a ``Sequence`` of identity normalizers (e.g. an empty one)."""
    if state is None:
        return True
    return state.get("type") == "Sequence" and all(
        _identity_normalizer(n) for n in state.get("normalizers", ())
    )


def newline_safe(tok: Tokenizer) -> bool:
    """True when cutting a text right after any newline cannot change its tokens.

    That holds when the normalizer is absent or an identity (DeepSeek-Coder's is an empty
    ``Sequence``), every CR and LF is a pre-token of its own, and no added token that encoding
    can match contains a newline.
    """
    if tok.pre_tokenizer is None:
        return False
    if tok.normalizer is not None and not _identity_normalizer(
        json.loads(tok.normalizer.__getstate__())
    ):
        return False
    matched = (
        t.content
        for t in tok.get_added_tokens_decoder().values()
        if not (t.special and tok.encode_special_tokens)
    )
    if any("\n" in text or "\r" in text for text in matched):
        return False
    spans = {offsets for _, offsets in tok.pre_tokenizer.pre_tokenize_str(_PROBE)}
    return all((i, i + 1) in spans for i, c in enumerate(_PROBE) if c in "\r\n")


def newline_cuts(text: str, chunk_chars: int | None) -> list[int]:
    """End offsets of the chunks of ``text``: cut right after a newline once a chunk has at least
    ``chunk_chars`` characters (None: one chunk)."""
    if chunk_chars is None or len(text) <= chunk_chars:
        return [len(text)]
    cuts = []
    start = 0
    while len(text) - start > chunk_chars:
        cut = text.find("\n", start + chunk_chars) + 1
        if cut == 0:
            break
        cuts.append(cut)
        start = cut
    if start < len(text):
        cuts.append(len(text))
    return cuts


_TOKENIZERS: dict[str, tuple[Tokenizer, bool]] = {}


def get_tokenizer(path: str) -> tuple[Tokenizer, bool]:
    """The process-wide :func:`text_tokenizer` for ``path`` (loaded once per worker) and its
    newline safety."""
    if path not in _TOKENIZERS:
        tok = text_tokenizer(load_tokenizer(path))
        _TOKENIZERS[path] = (tok, newline_safe(tok))
    return _TOKENIZERS[path]


TOKENIZER_CONFIG = "tokenizer_config.json"
"""transformers' tokenizer settings in an HF tokenizer or model directory."""


def read_add_bos(tok_dir: Path) -> bool | None:
    """The BOS policy an HF tokenizer directory states (``add_bos_token``), None if unstated."""
    file = tok_dir / TOKENIZER_CONFIG
    if not file.is_file():
        return None
    value = json.loads(file.read_text("utf-8")).get("add_bos_token")
    return value if isinstance(value, bool) else None
