"""The small files of an HF export, written so that they agree with each other and with training.

An export's end and start tokens are stated in five places: ``config.json``,
``generation_config.json``, ``tokenizer_config.json`` (``bos_token``, ``eos_token``,
``add_bos_token``, ``chat_template``), ``special_tokens_map.json`` and the post-processor of
``tokenizer.json``. Clients each read a different one (``generate`` reads the generation config,
``AutoTokenizer`` the tokenizer config, transformers 5 and raw ``tokenizers`` only the
post-processor, llama.cpp's GGUF converter the tokenizer config), so :func:`write_export_files`
writes all five from one :class:`ExportTokens`: the checkpoint's BOS policy and its end token.

BOS. transformers 4.x adds BOS for a ``LlamaTokenizerFast`` directory when ``add_bos_token`` is
true, whatever ``tokenizer.json`` says; transformers 5 (and a ``PreTrainedTokenizerFast`` under
4.x) add exactly what the ``tokenizer.json`` post-processor adds. The export sets both to the
policy (a ``TemplateProcessing`` that prepends BOS, or DeepSeek's ``ByteLevel`` that adds
nothing), so ``tokenizer(text).input_ids`` starts the way training data did under both.

``config.json`` is DeepSeek's form: the two-key ``rope_scaling`` ``{"type": "linear",
"factor": 4.0}`` (transformers up to 4.42 rejects any other key in it; 5.x reads it as linear),
``rope_theta`` as the source wrote it (DeepSeek: the integer 100000), no keys of newer
transformers releases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_dscoder.convert import ConversionError
from megatron_dscoder.convert.hf import DTYPE_NAMES, TokenizerInfo, write_json
from megatron_dscoder.convert.instruct import instruct_eos
from megatron_dscoder.model.registry import ModelArch
from megatron_dscoder.tokenizer import TOKENIZER_CONFIG

SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_JSON = "tokenizer.json"
#: DeepSeek's post-processor (adds nothing): used for an export whose model was trained without BOS.
NO_BOS_POST_PROCESSOR = {
    "type": "ByteLevel",
    "add_prefix_space": True,
    "trim_offsets": False,
    "use_regex": True,
}


@dataclass(frozen=True)
class ExportTokens:
    """What every file of an export says about special tokens."""

    bos: str | None
    """BOS token string (None: the tokenizer has none)."""
    bos_id: int | None
    eos: str | None
    eos_id: int | None
    add_bos: bool
    """The BOS policy: whether the model saw BOS at the start of every document."""
    chat_template: str | None
    """The Jinja chat template, or None for none (a base model)."""


def rope_theta(arch: ModelArch, recorded: int | float | None = None) -> int | float:
    """``rope_theta`` as the source wrote it when it is the same number, else an integer when
    the value is whole (DeepSeek writes ``100000``, not ``100000.0``)."""
    if recorded is not None and float(recorded) == float(arch.rotary_base):
        return recorded
    theta = float(arch.rotary_base)
    return int(theta) if theta.is_integer() else theta


def hf_config(
    arch: ModelArch,
    *,
    vocab_rows: int,
    dtype: torch.dtype,
    tokens: ExportTokens,
    theta: int | float | None = None,
) -> dict[str, Any]:
    """``config.json`` with the keys DeepSeek's published configs have (transformers 4.33)."""
    factor = arch.seq_len_interpolation_factor
    return {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": tokens.bos_id,
        "eos_token_id": tokens.eos_id,
        "hidden_act": "silu",
        "hidden_size": arch.hidden_size,
        "initializer_range": arch.init_method_std,
        "intermediate_size": arch.ffn_hidden_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "model_type": "llama",
        "num_attention_heads": arch.num_attention_heads,
        "num_hidden_layers": arch.num_layers,
        "num_key_value_heads": arch.num_query_groups,
        "pretraining_tp": 1,
        "rms_norm_eps": arch.layernorm_epsilon,
        "rope_scaling": None if factor is None else {"type": "linear", "factor": float(factor)},
        "rope_theta": rope_theta(arch, theta),
        "tie_word_embeddings": False,
        "torch_dtype": DTYPE_NAMES[dtype],
        "use_cache": True,
        "vocab_size": vocab_rows,
    }


def generation_config(tokens: ExportTokens, carried: dict[str, Any]) -> dict[str, Any]:
    """DeepSeek's ``generation_config.json`` (bos and eos ids), plus any other settings the
    source carried (sampling defaults), never disagreeing with ``config.json``."""
    ids = {"bos_token_id": tokens.bos_id, "eos_token_id": tokens.eos_id}
    extra = {k: v for k, v in carried.items() if k not in ids and k != "transformers_version"}
    return {"_from_model_config": True, **{k: v for k, v in ids.items() if v is not None}, **extra}


def post_processor(tokens: ExportTokens) -> dict[str, Any]:
    """The ``tokenizer.json`` post-processor of the policy (see the module docstring)."""
    if not tokens.add_bos or tokens.bos is None:
        return dict(NO_BOS_POST_PROCESSOR)
    return {
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": tokens.bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
        ],
        "pair": [
            {"SpecialToken": {"id": tokens.bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {
            tokens.bos: {"id": tokens.bos, "ids": [tokens.bos_id], "tokens": [tokens.bos]}
        },
    }


def _rewrite(path: Path, update: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    data.update(update)
    for key in drop:
        data.pop(key, None)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


def write_tokenizer_files(tok_dir: Path, tokens: ExportTokens) -> None:
    """Make the tokenizer files copied into ``tok_dir`` say what ``tokens`` says."""
    names = {k: v for k, v in (("bos_token", tokens.bos), ("eos_token", tokens.eos)) if v}
    template = {"chat_template": tokens.chat_template} if tokens.chat_template else {}
    _rewrite(
        tok_dir / TOKENIZER_CONFIG,
        {**names, "add_bos_token": tokens.add_bos, "add_eos_token": False, **template},
        drop=() if template else ("chat_template",),
    )
    (tok_dir / "chat_template.jinja").unlink(missing_ok=True)  # one template: the config's
    if (tok_dir / SPECIAL_TOKENS_MAP).is_file():
        _rewrite(tok_dir / SPECIAL_TOKENS_MAP, names)
    if (tok_dir / TOKENIZER_JSON).is_file() and _adds_bos(tok_dir, tokens) != tokens.add_bos:
        state = json.loads((tok_dir / TOKENIZER_JSON).read_text("utf-8"))
        state["post_processor"] = post_processor(tokens)
        (tok_dir / TOKENIZER_JSON).write_text(json.dumps(state, ensure_ascii=False), "utf-8")


def _adds_bos(tok_dir: Path, tokens: ExportTokens) -> bool:
    """Whether the ``tokenizer.json`` there prepends BOS when asked for special tokens (a file
    that already follows the policy is left byte for byte as it is)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tok_dir / TOKENIZER_JSON)).encode("a").ids
    return bool(ids) and tokens.bos_id is not None and ids[0] == tokens.bos_id


def write_export_files(
    out_dir: Path,
    arch: ModelArch,
    *,
    vocab_rows: int,
    dtype: torch.dtype,
    tokens: ExportTokens,
    carried_generation: dict[str, Any] | None = None,
    theta: int | float | None = None,
    pad_token_id: int | None = None,
) -> None:
    """``config.json``, ``generation_config.json`` and (when copied there) the tokenizer files."""
    config = hf_config(arch, vocab_rows=vocab_rows, dtype=dtype, tokens=tokens, theta=theta)
    if pad_token_id is not None:
        config["pad_token_id"] = pad_token_id
    write_json(out_dir / "config.json", config)
    write_json(
        out_dir / "generation_config.json", generation_config(tokens, carried_generation or {})
    )
    if (out_dir / TOKENIZER_JSON).is_file() or (out_dir / TOKENIZER_CONFIG).is_file():
        write_tokenizer_files(out_dir, tokens)


def checkpoint_bos(meta: dict[str, Any]) -> bool:
    """The BOS policy a checkpoint was trained with: its data's (``--bos``, always for SFT
    data), or an imported model's tokenizer's; False for checkpoints that predate the record
    (pretraining data had no BOS by default)."""
    recorded = meta.get("data", {}).get("bos")
    if recorded is None:
        recorded = meta.get("converted_from", {}).get("add_bos")
    if recorded is None:
        recorded = bool(meta.get("data", {}).get("sft"))
    return bool(recorded)


def export_tokens(
    meta: dict[str, Any],
    tok: TokenizerInfo | None,
    carried: dict[str, Any],
    *,
    chat_template: bool | None,
    bos: bool | None,
) -> ExportTokens:
    """The special tokens an export states, decided once for all of its files.

    An instruct export (``chat_template`` True, or None after ``--stage sft``) ends at
    ``<|EOT|>`` and carries the template; ``chat_template`` False ends at the end-of-sentence
    token with no template; None otherwise keeps a from-hf source's ids (a round trip of
    DeepSeek-Coder-Instruct keeps eos ``<|EOT|>`` and its template)."""
    from megatron_dscoder.instruct.template import JINJA
    from megatron_dscoder.tokenizer import EOT, load_tokenizer

    vocab = load_tokenizer(tok.path) if tok is not None else None
    instruct_run = (
        chat_template if chat_template is not None else bool(meta.get("data", {}).get("sft"))
    )
    if instruct_run and tok is None:
        raise ConversionError("--chat-template needs a tokenizer (--tokenizer-model DIR)")
    eot = vocab.token_to_id(EOT) if vocab is not None else None
    bos_id = carried.get("bos_token_id", tok.bos_token_id if tok else None)
    eos_id = tok.eos_token_id if tok else None
    template = None
    if instruct_run:
        eos_id, template = instruct_eos(tok.path), JINJA
    elif chat_template is None:
        eos_id = carried.get("eos_token_id", eos_id)
        if eot is not None and eos_id == eot:  # a round trip of an instruct model
            template = declared_chat_template(tok.path) if tok else None

    def name(token_id: object) -> str | None:
        known = vocab is not None and isinstance(token_id, int)
        return vocab.id_to_token(token_id) if known else None

    return ExportTokens(
        bos=name(bos_id),
        bos_id=bos_id,
        eos=name(eos_id),
        eos_id=eos_id,
        add_bos=checkpoint_bos(meta) if bos is None else bos,
        chat_template=template,
    )


def declared_chat_template(tok_dir: Path) -> str | None:
    """The chat template a tokenizer directory declares (its config's or
    ``chat_template.jinja``)."""
    jinja = tok_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    file = tok_dir / TOKENIZER_CONFIG
    value = json.loads(file.read_text("utf-8")).get("chat_template") if file.is_file() else None
    return value if isinstance(value, str) else None
