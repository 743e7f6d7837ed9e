"""The two conversion directions, each validated before anything is written, then atomic.

Every check that can fail (config, shards, tokenizer size, layout) runs before the output exists;
the output is written into a hidden temporary directory next to ``--save`` and renamed into place
only when complete, so a failed conversion leaves nothing behind.

``to_hf``: torch_dist checkpoint (a root with ``latest_checkpointed_iteration.txt`` or one
``iter_XXXXXXX`` directory, written at any TP/PP) -> HF ``LlamaForCausalLM`` directory.

``from_hf``: HF Llama directory -> checkpoint root ``DST/iter_0000000`` (+ tracker), chunked as
``--tensor-model-parallel-size`` ranks save it, with ``run_config.json`` holding the HF model's
dimensions so ``pretrain --load DST --finetune`` needs no ``--model``. The source's generation
settings (its ``generation_config.json``, else the bos/eos/pad ids of its ``config.json``) are
stored in the checkpoint's tokenizer directory and in ``run_config.json``; ``to_hf`` writes them
back, so a round trip keeps e.g. DeepSeek-Coder-Instruct's ``eos_token_id`` 32021. A CPU toy run::

    python tools/convert_checkpoint.py from-hf --load hf_toy --save ckpt_toy
    python tools/convert_checkpoint.py to-hf --load ckpt_toy --save hf_back --check-logits
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_dscoder.checkpointing import checkpoint as checkpointing
from megatron_dscoder.checkpointing import checksums
from megatron_dscoder.config.run import ConfigError
from megatron_dscoder.config.splits import split_pipeline_layers
from megatron_dscoder.convert import ConversionError, export_files, hf
from megatron_dscoder.convert.keymap import (
    MAPPINGS,
    Geometry,
    KeyMapping,
    hf_names,
    hf_shapes,
    hf_tensors,
    megatron_shape,
    megatron_slice,
    stacked_key,
)
from megatron_dscoder.model.registry import MODELS, ModelArch
from megatron_dscoder.tokenizer import read_add_bos

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
FROM_HF_ITERATION = 0


@dataclass(frozen=True)
class Result:
    """What a conversion wrote."""

    output: Path
    """The HF directory (to-hf) or the checkpoint iteration directory (from-hf)."""
    arch: ModelArch
    dtype: torch.dtype
    vocab_rows: int
    """Rows of the HF embedding."""
    tokenizer: Path | None


def geometry_of(arch: ModelArch, hf_vocab_rows: int) -> Geometry:
    return Geometry(
        arch.num_attention_heads,
        arch.num_query_groups,
        arch.kv_channels,
        arch.ffn_hidden_size,
        hf_vocab_rows,
    )


def _ordered(arch: ModelArch) -> Iterator[tuple[KeyMapping, int | None]]:
    """(mapping, layer) in HF file order: embedding, layer 0..L-1, final norm, lm_head."""
    first_layer = next(i for i, m in enumerate(MAPPINGS) if m.per_layer)
    for m in MAPPINGS[:first_layer]:
        yield m, None
    for layer in range(arch.num_layers):
        for m in MAPPINGS:
            if m.per_layer:
                yield m, layer
    for m in MAPPINGS[first_layer:]:
        if not m.per_layer:
            yield m, None


@contextlib.contextmanager
def staged(dst: Path) -> Iterator[Path]:
    """A temporary directory next to ``dst``, renamed to ``dst`` on success, removed on failure."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConversionError(f"{dst}: already exists and is not empty; choose another --save")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dtype(name: str | None, default: torch.dtype) -> torch.dtype:
    if name is None:
        return default
    if name not in hf.DTYPES:
        raise ConversionError(f"unknown dtype {name!r}; choose from {', '.join(hf.DTYPES)}")
    return hf.DTYPES[name]


# ---- megatron -> HF -------------------------------------------------------------------------


def resolve_checkpoint(load: str | Path) -> Path:
    """An iteration directory: ``load`` itself, or the latest checkpoint under the root."""
    load = Path(load)
    if (load / checkpointing.METADATA).is_file():
        return load
    found = checkpointing.find_latest_checkpoint(load) if load.is_dir() else None
    if found is None:
        raise ConversionError(
            f"{load}: no checkpoint (neither {checkpointing.METADATA} nor a "
            f"complete iter_* directory under it)"
        )
    return found


def _checkpoint_tokenizer(meta: dict[str, Any], ckpt_dir: Path) -> Path | None:
    recorded = meta.get("tokenizer")
    candidates = [] if recorded is None else [Path(recorded), ckpt_dir / recorded]
    for path in [*candidates, ckpt_dir / "tokenizer"]:
        found = hf.tokenizer_dir(path)
        if found is not None:
            return found
    if recorded is not None:
        logger.warning(
            "tokenizer %s recorded in the checkpoint is not there; exporting without "
            "tokenizer files (pass --tokenizer-model DIR)",
            recorded,
        )
    return None


def to_hf(
    load: str | Path,
    save: str | Path,
    *,
    tokenizer: str | Path | None = None,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    chat_template: bool | None = None,
    bos: bool | None = None,
    allow_unverified: bool = False,
) -> Result:
    """Export a torch_dist checkpoint to an HF ``LlamaForCausalLM`` directory.

    ``chat_template`` (None: when the checkpoint's run was ``--stage sft``) makes it an instruct
    model: ``<|EOT|>`` is its eos and the tokenizer carries DeepSeek-Coder-Instruct's template.
    ``bos`` (None: the checkpoint's BOS policy, :func:`.export_files.checkpoint_bos`) decides
    whether the exported tokenizer prepends BOS; every file of the export then agrees
    (:mod:`.export_files`). The checkpoint's checksum manifest is verified; one without a
    manifest is exported only with ``allow_unverified`` (``--allow-unverified-checkpoint``)."""
    from megatron_dscoder.convert.megatron import CheckpointFormatError, CheckpointReader

    ckpt_dir = resolve_checkpoint(load)
    try:
        meta = checkpointing.read_checkpoint_metadata(ckpt_dir)
        checkpointing.verify_checkpoint(ckpt_dir)
        # A corrupted or unlisted file is refused; so is a missing manifest, unless allowed.
        problems = checksums.verify_manifest(ckpt_dir, allow_unverified=allow_unverified)
        if problems:
            raise checkpointing.CheckpointError(problems[0])
        arch = ModelArch(**meta["arch"])
        reader = CheckpointReader(ckpt_dir, arch)
    except (checkpointing.CheckpointError, CheckpointFormatError, KeyError, TypeError) as err:
        raise ConversionError(f"{ckpt_dir}: {err}") from err
    recorded_rows = meta.get("converted_from", {}).get("vocab_rows")
    rows = min(recorded_rows or arch.padded_vocab_size(), reader.vocab_rows)
    geometry = geometry_of(arch, rows)
    for mapping in MAPPINGS:
        key = stacked_key(mapping.megatron)
        want = megatron_shape(mapping, arch.hidden_size, geometry, reader.vocab_rows)
        if reader.shapes[key] != want:
            raise ConversionError(
                f"{ckpt_dir}: {key} has shape {reader.shapes[key]}, but "
                f"run_config.json's arch implies {want}"
            )
    if tokenizer is not None:
        tok_dir = hf.tokenizer_dir(tokenizer)
        if tok_dir is None:
            raise ConversionError(f"{tokenizer}: no tokenizer.json (not an HF tokenizer)")
    else:
        tok_dir = _checkpoint_tokenizer(meta, ckpt_dir)
    tok = hf.inspect_tokenizer(tok_dir) if tok_dir is not None else None
    if tok is not None and tok.length > rows:
        raise ConversionError(
            f"{tok.path}: the tokenizer has {tok.length} tokens, more than the "
            f"{rows} rows of the checkpoint's (padded) vocabulary"
        )
    if tok is not None and tok.length != arch.vocab_size:
        logger.warning(
            "%s has %d tokens; the checkpoint was trained for vocab_size=%d",
            tok.path,
            tok.length,
            arch.vocab_size,
        )
    out_dtype = _dtype(dtype, reader.dtype)
    order = list(_ordered(arch))
    sizes = [
        (name, int(torch.Size(shape).numel()) * out_dtype.itemsize)
        for m, layer in order
        for name, shape in zip(
            hf_names(m, layer), hf_shapes(m, arch.hidden_size, geometry), strict=True
        )
    ]
    plan = hf.plan_shards(sizes, max_shard_bytes)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        current: tuple[int | None, dict[str, torch.Tensor]] = (-1, {})
        for m, layer in order:
            key = stacked_key(m.megatron)
            if layer is None:
                tensor = reader.globals([key])[key]
            else:
                if current[0] != layer:
                    current = (layer, reader.layer(layer))
                tensor = current[1].pop(key)
            for name, value in hf_tensors(m, layer, tensor, geometry).items():
                yield name, value.to(out_dtype)

    carried = hf.carried_generation(tok_dir) or meta.get("converted_from", {}).get("generation", {})
    tokens = export_files.export_tokens(meta, tok, carried, chat_template=chat_template, bos=bos)
    save = Path(save)
    with staged(save) as tmp:
        total = hf.write_shards(tmp, plan, tensors())
        if tok is not None:
            hf.copy_tokenizer(tok.path, tmp)
        export_files.write_export_files(
            tmp,
            arch,
            vocab_rows=rows,
            dtype=out_dtype,
            tokens=tokens,
            carried_generation=carried,
            theta=meta.get("converted_from", {}).get("rope_theta"),
            pad_token_id=carried.get("pad_token_id"),
        )
    logger.info(
        "exported %s (%.1f MB in %d shard(s)) to %s", ckpt_dir, total / 1e6, len(plan), save
    )
    return Result(save, arch, out_dtype, rows, tok.path if tok else None)


# ---- HF -> megatron -------------------------------------------------------------------------


def _validate_layout(arch: ModelArch, tp: int, pp: int) -> None:
    if arch.num_attention_heads % tp or arch.num_query_groups % tp:
        raise ConversionError(
            f"tensor-model-parallel-size {tp} does not divide num_attention_heads="
            f"{arch.num_attention_heads} and num_query_groups={arch.num_query_groups}"
        )
    try:
        split_pipeline_layers(arch.num_layers, pp)
    except ConfigError as err:
        raise ConversionError(str(err)) from err


def _registry_name(arch: ModelArch) -> str | None:
    return next((name for name, known in MODELS.items() if known == arch), None)


def from_hf(
    load: str | Path,
    save: str | Path,
    *,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    tokenizer: str | Path | None = None,
    dtype: str | None = None,
) -> Result:
    """Import an HF Llama directory as a torch_dist checkpoint root that pretrain can load."""
    from megatron_dscoder.convert.megatron import one_rank_group, write_checkpoint

    src = Path(load)
    config = hf.read_config(src)
    tok_dir = hf.tokenizer_dir(tokenizer if tokenizer is not None else src)
    if tokenizer is not None and tok_dir is None:
        raise ConversionError(f"{tokenizer}: no tokenizer.json (not an HF tokenizer)")
    tok = hf.inspect_tokenizer(tok_dir) if tok_dir is not None else None
    if tok is None:
        logger.warning(
            "no tokenizer.json in %s: the vocabulary size is config.json's and no "
            "tokenizer is recorded (pass --tokenizer-model DIR)",
            src,
        )
    if tok is not None and tok.length > config["vocab_size"]:
        raise ConversionError(
            f"{tok.path}: the tokenizer has {tok.length} tokens but the model's "
            f"embedding has only {config['vocab_size']} rows (vocab_size in "
            f"{src / hf.CONFIG})"
        )
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    arch = hf.arch_from_config(
        config, tokens=tok.length if tok else None, tensor_model_parallel_size=tp
    )
    _validate_layout(arch, tp, pp)
    reader = hf.SafetensorsReader(src)
    rows = config["vocab_size"]
    geometry = geometry_of(arch, rows)
    tied = "lm_head.weight" not in reader and config.get("tie_word_embeddings", False)
    aliases = {"lm_head.weight": "model.embed_tokens.weight"} if tied else {}
    for m, layer in _ordered(arch):
        for name, shape in zip(
            hf_names(m, layer), hf_shapes(m, arch.hidden_size, geometry), strict=True
        ):
            stored = aliases.get(name, name)
            if stored not in reader:
                raise ConversionError(f"{src}: tensor {stored} is missing from the safetensors")
            if reader.shape(stored) != shape:
                raise ConversionError(
                    f"{src}: {stored} has shape {reader.shape(stored)}, config.json implies {shape}"
                )
    out_dtype = _dtype(dtype, reader.dtype("model.embed_tokens.weight"))
    by_key = {stacked_key(m.megatron): m for m in MAPPINGS}

    def read(name: str, index: tuple[slice, ...]) -> torch.Tensor:
        return reader.read(aliases.get(name, name), index)

    def produce(key: str, layer: int | None, start: int, stop: int) -> torch.Tensor:
        return megatron_slice(by_key[key], layer, start, stop, read, geometry)

    root = Path(save)
    final_dir = checkpointing.iteration_dir(root, FROM_HF_ITERATION)
    state = {"iteration": FROM_HF_ITERATION, "consumed_samples": 0, "skipped_iterations": 0}
    with staged(root) as tmp:
        ckpt_dir = checkpointing.iteration_dir(tmp, FROM_HF_ITERATION)
        ckpt_dir.mkdir()
        with one_rank_group():
            write_checkpoint(
                ckpt_dir,
                arch,
                produce,
                tensor_model_parallel_size=tp,
                dtype=out_dtype,
                common={"iteration": FROM_HF_ITERATION, "train_state": state},
            )
        generation = hf.generation_settings(src, config)
        if tok is not None:
            hf.copy_tokenizer(tok.path, ckpt_dir / "tokenizer")
            if generation:
                hf.write_json(ckpt_dir / "tokenizer" / hf.GENERATION_CONFIG, generation)
        run_config = {
            "format_version": checkpointing.FORMAT_VERSION,
            "model": _registry_name(arch),
            "arch": dataclasses.asdict(arch),
            "iteration": FROM_HF_ITERATION,
            "consumed_samples": 0,
            "tokenizer": str((final_dir / "tokenizer").resolve()) if tok else None,
            "converted_from": {
                "format": "hf_llama",
                "path": str(src.resolve()),
                "vocab_rows": rows,
                "dtype": hf.DTYPE_NAMES[out_dtype],
                "tensor_model_parallel_size": tp,
                "pipeline_model_parallel_size": pp,
                "generation": generation,
                "rope_theta": hf.rope_theta_of(config),
                "add_bos": read_add_bos(tok.path) if tok else None,
            },
        }
        (ckpt_dir / checkpointing.METADATA).write_text(json.dumps(run_config, indent=2) + "\n")
        checksums.write_manifest(ckpt_dir)  # loads verified, like a checkpoint training saved
        (tmp / checkpointing.TRACKER).write_text(f"{FROM_HF_ITERATION}\n")
    logger.info("imported %s to %s (TP=%d chunks, PP=%d recorded)", src, final_dir, tp, pp)
    return Result(final_dir, arch, out_dtype, rows, tok.path if tok else None)
