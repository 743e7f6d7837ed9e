"""Inputs and jobs of the conversion fixture that follow the BOS policy and the v1.5 recipe.

* BOS: one corpus preprocessed twice (without and with ``--bos``), a debug model trained on each
  for one iteration, each exported; plus ``--bos`` on data made without it (refused).
* v1.5: a random DeepSeek-Coder-v1.5-shaped HF model (MHA, RoPE base 10000, DeepSeek-LLM's
  102,400 embedding rows and tokenizer structure; two layers of the debug width) imported,
  continued two iterations with ``--stage continue-pretrain`` and exported with the logits
  check; plus the same continuation with DeepSeek-Coder's tokenizer (refused before anything
  is built).
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path
from types import SimpleNamespace

from megatron_dscoder.model.registry import DEEPSEEK_LLM_VOCAB_ROWS
from tests.convert.helpers import make_hf_llama

CORPUS = ("textwrap.py", "string.py", "difflib.py", "json/decoder.py", "json/encoder.py")
TINY_RUN = ["--train-iters", "1", "--global-batch-size", "2", "--seq-length", "64"]


def prepare(d: SimpleNamespace, tokenizer_dir: Path) -> None:
    """The two corpora (``d.data/bos_0``, ``d.data/bos_1``) and the v1.5 source model."""
    from megatron_dscoder.preprocess.config import PreprocessConfig
    from megatron_dscoder.preprocess.pipeline import run_pipeline
    from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir, train_tokenizer
    from tests.conftest import stdlib_texts

    d.data = d.src.parent / "data"
    d.data.mkdir()
    root = Path(sysconfig.get_paths()["stdlib"])
    records = [json.dumps({"text": (root / n).read_text(), "path": n}) for n in CORPUS]
    (d.data / "in.jsonl").write_text("\n".join(records) + "\n")
    for bos in (0, 1):
        config = PreprocessConfig(
            inputs=[str(d.data / "in.jsonl")],
            tokenizer_model=str(tokenizer_dir),
            output_prefix=str(d.data / f"bos_{bos}" / "data"),
            stats_json=str(d.data / f"bos_{bos}.json"),
            workers=1,
            progress=False,
            fim_rate=0.0,
            bos=bool(bos),
        )
        run_pipeline(config)
    d.llm_tokenizer = save_tokenizer_dir(
        train_tokenizer(stdlib_texts()[:3], vocab_size=800, layout="deepseek-llm"),
        d.src.parent / "llm_tokenizer",
    )
    make_hf_llama(
        d.src / "hf_v15",
        mha=True,
        vocab_rows=DEEPSEEK_LLM_VOCAB_ROWS,
        tokenizer=d.llm_tokenizer,
        seed=15,
    )


def jobs(d: SimpleNamespace, tokenizer_dir: Path) -> list[dict]:
    def pretrain(name: str, *argv: object) -> dict:  # cli: exit status 2 for a refused run
        args = [str(a) for a in argv]
        return {"name": name, "module": "megatron_dscoder.pretrain", "entry": "cli", "argv": args}

    def convert(name: str, *argv: object) -> dict:
        return {"name": name, "argv": [str(a) for a in argv], "measure": False}

    out = []
    for bos in (0, 1):
        data = ["--data-path", d.data / f"bos_{bos}" / "data", "--tokenizer-model", tokenizer_dir]
        flag = ["--bos"] if bos else []
        out += [
            pretrain(f"train_bos_{bos}", "--model", "debug", *data, *flag, *TINY_RUN,
                     "--save", d.meg / f"train_bos_{bos}"),
            convert(f"export_bos_{bos}", "to-hf", "--load", d.meg / f"train_bos_{bos}",
                    "--save", d.hf / f"train_bos_{bos}"),
        ]  # fmt: skip
    out.append(
        pretrain("err_bos_on_plain_data", "--model", "debug", "--data-path",
                 d.data / "bos_0" / "data", "--tokenizer-model", tokenizer_dir, "--bos",
                 *TINY_RUN, "--save", d.err / "out_bos"),
    )  # fmt: skip
    continue_v15 = ["--stage", "continue-pretrain", "--mock-data", "--lr-warmup-iters", "0",
                    "--train-iters", "2", "--global-batch-size", "2",
                    "--seq-length", "64"]  # fmt: skip
    out += [
        convert("import_v15", "from-hf", "--load", d.src / "hf_v15", "--save", d.meg / "v15",
                "--check-logits"),
        pretrain("continue_v15", "--load", d.meg / "v15", *continue_v15,
                 "--save", d.meg / "v15_continued"),
        convert("export_v15", "to-hf", "--load", d.meg / "v15_continued", "--save",
                d.hf / "v15", "--check-logits"),
        pretrain("err_v15_coder_tokenizer", "--load", d.meg / "v15", *continue_v15,
                 "--tokenizer-model", tokenizer_dir, "--save", d.err / "out_v15"),
    ]  # fmt: skip
    return out
