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
from pathlib import Path

from megatron_dscoder.config.arg_types import non_negative_float, positive_float, positive_int
from megatron_dscoder.config.flags import OneLineParser
from megatron_dscoder.convert import ConversionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("direction", choices=("to-hf", "from-hf"))
    parser.add_argument(
        "--load",
        required=True,
        metavar="SRC",
        help="to-hf: checkpoint root or iter_* directory; from-hf: HF model dir",
    )
    parser.add_argument(
        "--save", required=True, metavar="DST", help="output directory (must not exist or be empty)"
    )
    parser.add_argument(
        "--tensor-model-parallel-size",
        type=positive_int,
        default=1,
        help="from-hf: TP layout to chunk the checkpoint for (default: 1)",
    )
    parser.add_argument(
        "--pipeline-model-parallel-size",
        type=positive_int,
        default=1,
        help="from-hf: PP layout to validate and record (default: 1)",
    )
    parser.add_argument(
        "--check-logits",
        action="store_true",
        help="load source and result on CPU, print the max |logits difference|",
    )
    parser.add_argument(
        "--logits-tolerance",
        type=non_negative_float,
        default=1e-4,
        help="with --check-logits: exit 3 above this (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer-model",
        default=None,
        metavar="DIR",
        help="HF tokenizer directory (default: the one the source records/holds)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="output weight dtype (default: the source's)",
    )
    parser.add_argument(
        "--chat-template",
        choices=("auto", "deepseek-instruct", "none"),
        default="auto",
        help="to-hf: write DeepSeek-Coder-Instruct's chat template and <|EOT|> as eos "
        "(auto: when the checkpoint was trained with --stage sft)",
    )
    parser.add_argument(
        "--max-shard-size-gb",
        type=positive_float,
        default=2.0,
        help="to-hf: safetensors shard size (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``dscoder-convert`` / ``tools/convert_checkpoint.py``; returns the exit status."""
    # Conversion is host-memory work: always on the CPU (set before torch is first imported).
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from megatron_dscoder.convert import pipeline

    start = time.perf_counter()
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    try:
        if args.direction == "to-hf":
            if (tp, pp) != (1, 1):
                logging.info("to-hf reads any layout; the parallel sizes are not needed")
            result = pipeline.to_hf(
                args.load,
                args.save,
                tokenizer=args.tokenizer_model,
                dtype=args.dtype,
                chat_template={"auto": None, "deepseek-instruct": True, "none": False}[
                    args.chat_template
                ],
                max_shard_bytes=int(args.max_shard_size_gb * 1024**3),
            )
            ckpt_dir, hf_dir = pipeline.resolve_checkpoint(args.load), result.output
        else:
            result = pipeline.from_hf(
                args.load,
                args.save,
                tensor_model_parallel_size=tp,
                pipeline_model_parallel_size=pp,
                tokenizer=args.tokenizer_model,
                dtype=args.dtype,
            )
            ckpt_dir, hf_dir = result.output, Path(args.load)
    except ConversionError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(
        f"{args.direction}: wrote {result.output} ({result.arch.num_layers} layers, "
        f"{str(result.dtype).removeprefix('torch.')}, {result.vocab_rows} vocabulary rows) in "
        f"{time.perf_counter() - start:.1f} s, peak RSS {peak_mb:.0f} MB\n"
    )
    if args.check_logits:
        from megatron_dscoder.convert.logits import max_abs_logits_diff

        diff = max_abs_logits_diff(ckpt_dir, hf_dir, result.arch, result.vocab_rows)
        sys.stdout.write(f"check-logits: max abs logits difference {diff:.3e}\n")
        if diff > args.logits_tolerance:
            sys.stderr.write(f"error: logits differ by {diff:.3e} > {args.logits_tolerance:g}\n")
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
