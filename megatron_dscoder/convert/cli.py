"""Convert DeepSeek-Coder checkpoints between megatron-core (torch_dist) and Hugging Face Llama.

    # a trained checkpoint (any TP/PP) -> an HF directory, then compare logits on CPU
    python tools/convert_checkpoint.py to-hf --load out/ckpt --save out/hf --check-logits

    # DeepSeek's published weights -> a checkpoint that `pretrain --load DIR --finetune` continues
    python tools/convert_checkpoint.py from-hf --load deepseek-coder-6.7b-base \\
        --save out/ds67b --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2

    # CPU toy run (under a minute): a debug model and a toy tokenizer, exported and imported back
    python tools/train_tokenizer.py --output out/tok-toy --vocab-size 2000 \
        --input "$(python -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')/json"
    python -m megatron_dscoder.pretrain --model debug --mock-data --train-iters 2 --save out/toy
    python tools/convert_checkpoint.py to-hf --load out/toy --save out/toy_hf \
        --tokenizer-model out/tok-toy --check-logits
    python tools/convert_checkpoint.py from-hf --load out/toy_hf --save out/toy_back --check-logits

Conversion runs on the CPU and streams one layer at a time (peak memory about one layer plus the
embedding, plus one safetensors shard when exporting); the parallel sizes only matter for
`from-hf`, which chunks the checkpoint as that layout saves it (torch_dist reshards on load
anyway). Errors name the problem and leave `--save` untouched. Exit status: 0 done, 1 conversion
error, 3 logits differ by more than `--logits-tolerance`.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from dataclasses import MISSING, dataclass
from pathlib import Path

from megatron_dscoder.config.flags import (
    OneLineParser,
    add_flags,
    opt,
    require_positive,
    values_from_args,
)
from megatron_dscoder.errors import run_cli

#: Exit status of ``--check-logits`` when the logits differ by more than the tolerance: the
#: conversion ran, but its result is not trusted.
LOGITS_DIFFER = 3


CHAT_TEMPLATE = {"auto": None, "deepseek-instruct": True, "none": False}


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """Options of ``dscoder-convert`` (after the direction, ``to-hf`` or ``from-hf``); each
    field is its flag."""

    load: str = opt(
        MISSING,
        "to-hf: checkpoint root or iter_* directory; from-hf: HF model dir",
        metavar="SRC",
        required=True,
    )
    save: str = opt(
        MISSING, "output directory (must not exist or be empty)", metavar="DST", required=True
    )
    tensor_model_parallel_size: int = opt(
        1, "from-hf: TP layout to chunk the checkpoint for (default: %(default)s)"
    )
    pipeline_model_parallel_size: int = opt(
        1, "from-hf: PP layout to validate and record (default: %(default)s)"
    )
    check_logits: bool = opt(
        False, "load source and result on CPU, print the max |logits difference|"
    )
    logits_tolerance: float = opt(
        1e-4, "with --check-logits: exit 3 above this (default: %(default)s)"
    )
    tokenizer_model: str | None = opt(
        None, "HF tokenizer directory (default: the one the source records/holds)", metavar="DIR"
    )
    dtype: str | None = opt(
        None,
        "output weight dtype (default: the source's)",
        choices=("float32", "bfloat16", "float16"),
    )
    chat_template: str = opt(
        "auto",
        "to-hf: write DeepSeek-Coder-Instruct's chat template and <|EOT|> as eos "
        "(auto: when the checkpoint was trained with --stage sft)",
        choices=tuple(CHAT_TEMPLATE),
    )
    bos: bool | None = opt(
        None,
        "to-hf: the exported tokenizer prepends BOS (default: as the checkpoint was trained, its "
        "data's --bos; DeepSeek's published models: yes)",
    )
    max_shard_size_gb: float = opt(2.0, "to-hf: safetensors shard size (default: %(default)s)")
    allow_unverified_checkpoint: bool = opt(
        False,
        "to-hf: export a checkpoint that has no checksum manifest (checksums.json), unverified, "
        "as the trainer loads one only with this flag",
    )

    def __post_init__(self) -> None:
        require_positive(
            self,
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "logits_tolerance",
            "max_shard_size_gb",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("direction", choices=("to-hf", "from-hf"))
    add_flags(parser, ConvertConfig)
    return parser


def prepare(argv: list[str] | None) -> tuple[str, ConvertConfig]:
    """The direction and the options, checked."""
    # Conversion is host-memory work: always on the CPU (set before torch is first imported).
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    args = build_parser().parse_args(argv)
    config = ConvertConfig(**values_from_args(ConvertConfig, args))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    if args.direction == "to-hf":
        _check_manifest(config.load, config.allow_unverified_checkpoint)
    return args.direction, config


def _check_manifest(load: str, allow_unverified: bool) -> None:
    """Refuse a checkpoint without a checksum manifest (unless ``allow_unverified``) or with a
    malformed one before any work, as the trainer does
    (:func:`~megatron_dscoder.checkpointing.checksums.manifest_problem`); a ``load`` that names
    no checkpoint, and the checksums themselves, are checked while converting."""
    from megatron_dscoder.checkpointing import checksums
    from megatron_dscoder.convert import ConversionError
    from megatron_dscoder.convert.pipeline import resolve_checkpoint

    try:
        ckpt_dir = resolve_checkpoint(load)
    except ConversionError:
        return
    problem = checksums.manifest_problem(ckpt_dir, allow_unverified)
    if problem:
        raise ConversionError(problem)


def work(plan: tuple[str, ConvertConfig]) -> int:
    """Convert (and compare logits); 3 when they differ by more than the tolerance."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from megatron_dscoder.convert import pipeline

    direction, config = plan
    start = time.perf_counter()
    tp, pp = config.tensor_model_parallel_size, config.pipeline_model_parallel_size
    if direction == "to-hf":
        if (tp, pp) != (1, 1):
            logging.info("to-hf reads any layout; the parallel sizes are not needed")
        result = pipeline.to_hf(
            config.load,
            config.save,
            tokenizer=config.tokenizer_model,
            dtype=config.dtype,
            chat_template=CHAT_TEMPLATE[config.chat_template],
            max_shard_bytes=int(config.max_shard_size_gb * 1024**3),
            bos=config.bos,
            allow_unverified=config.allow_unverified_checkpoint,
        )
        ckpt_dir, hf_dir = pipeline.resolve_checkpoint(config.load), result.output
    else:
        result = pipeline.from_hf(
            config.load,
            config.save,
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            tokenizer=config.tokenizer_model,
            dtype=config.dtype,
        )
        ckpt_dir, hf_dir = result.output, Path(config.load)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(
        f"{direction}: wrote {result.output} ({result.arch.num_layers} layers, "
        f"{str(result.dtype).removeprefix('torch.')}, {result.vocab_rows} vocabulary rows) in "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak_mb:.0f} MB\n"
    )
    if config.check_logits:
        from megatron_dscoder.convert.logits import max_abs_logits_diff

        diff = max_abs_logits_diff(ckpt_dir, hf_dir, result.arch, result.vocab_rows)
        sys.stdout.write(f"check-logits: max abs logits difference {diff:.3e}\n")
        if diff > config.logits_tolerance:
            sys.stderr.write(f"error: logits differ by {diff:.3e} > {config.logits_tolerance:g}\n")
            return LOGITS_DIFFER
    return 0


def main(argv: list[str] | None = None) -> int:
    """``dscoder-convert`` / ``tools/convert_checkpoint.py``; the exit status of
    :func:`megatron_dscoder.errors.run_cli` (a conversion error is found while converting: 1),
    or :data:`LOGITS_DIFFER`."""
    return run_cli(lambda: prepare(argv), work)


if __name__ == "__main__":
    sys.exit(main())
