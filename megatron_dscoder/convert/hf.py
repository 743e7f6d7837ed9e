"""The Hugging Face side of a conversion: reading ``config.json``, tokenizer files, safetensors.

An exported directory loads offline with ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` under transformers 4.34 through 5.x: ``LlamaForCausalLM``
in DeepSeek's own ``config.json`` form, ``vocab_size`` = the padded embedding rows (32256 for
DeepSeek-Coder, as published); the files that state special tokens are written together by
:mod:`.export_files` (an HF -> megatron -> HF round trip keeps the source's ids, e.g. 32021 for
DeepSeek-Coder-Instruct's ``<|EOT|>``, and its other generation settings). Weights are
safetensors, split into ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``
when larger than one shard. Reading is lazy: :class:`SafetensorsReader` returns slices straight
from the memory-mapped files.

    reader = SafetensorsReader("deepseek-coder-6.7b-base")
    q_rows = reader.read("model.layers.0.self_attn.q_proj.weight", (slice(0, 128),))
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from megatron_dscoder.convert import ConversionError
from megatron_dscoder.model.registry import ModelArch

logger = logging.getLogger(__name__)

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
#: The token-id keys of config.json that belong to generation and must survive a round trip.
GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
#: Files of an HF tokenizer directory that an export carries along (those present are copied).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ST_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
}


# ---- config.json ----------------------------------------------------------------------------


def read_config(hf_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an HF model directory, checked to be a plain Llama model."""
    path = Path(hf_dir) / CONFIG
    if not path.is_file():
        raise ConversionError(f"{path}: missing (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err})") from err
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" or (archs and "LlamaForCausalLM" not in archs):
        raise ConversionError(
            f"{path}: not a Llama model (model_type={config.get('model_type')!r}, "
            f"architectures={archs}); only LlamaForCausalLM checkpoints convert"
        )
    unsupported = {
        "hidden_act": (config.get("hidden_act", "silu"), "silu"),
        "attention_bias": (config.get("attention_bias", False), False),
        "mlp_bias": (config.get("mlp_bias", False), False),
    }
    for key, (got, want) in unsupported.items():
        if got != want:
            raise ConversionError(f"{path}: {key}={got!r} is not supported (needs {want!r})")
    heads = config["num_attention_heads"]
    if config.get("head_dim") not in (None, config["hidden_size"] // heads):
        raise ConversionError(
            f"{path}: head_dim={config['head_dim']} != hidden_size / "
            f"num_attention_heads (megatron-core derives it)"
        )
    return config


def rope_theta_of(config: dict[str, Any]) -> int | float:
    """``rope_theta`` exactly as written (legacy key or transformers v5's ``rope_parameters``)."""
    params = config.get("rope_parameters") or {}
    return config.get("rope_theta", params.get("rope_theta", 10000.0))


def rope_settings(config: dict[str, Any], where: str = CONFIG) -> tuple[float, float | None]:
    """``(rope_theta, linear factor or None)`` from a legacy or a transformers-v5 config."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params
    theta = rope_theta_of(config)
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return float(theta), None
    if kind != "linear":
        raise ConversionError(
            f"{where}: rope scaling {kind!r} is not supported "
            f"(megatron-core's seq_len_interpolation_factor is linear)"
        )
    factor = float(scaling["factor"])
    return float(theta), (factor if factor != 1.0 else None)


def choose_vocab_divisor(tokens: int, rows: int, tensor_model_parallel_size: int) -> int:
    """``make_vocab_size_divisible_by`` that pads ``tokens`` to exactly the HF ``rows``.

    Powers of two are preferred (DeepSeek: 32022 tokens -> 32256 rows with 256); ``rows``
    itself always works when TP divides it.
    """
    for divisor in (256, 128, 64, 32, 16, 8, 4, 2, 1, rows):
        arch = ModelArch(
            num_layers=1,
            hidden_size=1,
            ffn_hidden_size=1,
            num_attention_heads=1,
            num_query_groups=1,
            vocab_size=tokens,
            make_vocab_size_divisible_by=divisor,
        )
        if arch.padded_vocab_size(tensor_model_parallel_size) == rows:
            return divisor
    raise ConversionError(
        f"the HF embedding has {rows} rows, which tensor-model-parallel-size "
        f"{tensor_model_parallel_size} does not divide"
    )


def arch_from_config(
    config: dict[str, Any], *, tokens: int | None, tensor_model_parallel_size: int
) -> ModelArch:
    """The :class:`ModelArch` of an HF Llama config; ``tokens`` is the tokenizer length."""
    rows = config["vocab_size"]
    tokens = rows if tokens is None else tokens
    if tokens > rows:
        raise ConversionError(
            f"the tokenizer has {tokens} tokens but the model's embedding has "
            f"only {rows} rows (vocab_size in {CONFIG})"
        )
    theta, factor = rope_settings(config)
    return ModelArch(
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        ffn_hidden_size=config["intermediate_size"],
        num_attention_heads=config["num_attention_heads"],
        num_query_groups=config.get("num_key_value_heads") or config["num_attention_heads"],
        max_position_embeddings=config["max_position_embeddings"],
        rotary_base=int(theta) if float(theta).is_integer() else theta,  # type: ignore[arg-type]
        seq_len_interpolation_factor=factor,
        vocab_size=tokens,
        make_vocab_size_divisible_by=choose_vocab_divisor(tokens, rows, tensor_model_parallel_size),
        layernorm_epsilon=config.get("rms_norm_eps", 1e-6),
        init_method_std=config.get("initializer_range", 0.02),
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def generation_settings(model_dir: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generation settings of an HF model directory, to carry through a conversion.

    Its ``generation_config.json`` when present (verbatim), else the token ids of its
    ``config.json`` (``config``, if already read) that are set; {} when there are neither.
    """
    file = model_dir / GENERATION_CONFIG
    if file.is_file():
        return json.loads(file.read_text())
    config = config if config is not None else read_config(model_dir)
    return {key: config[key] for key in GENERATION_IDS if config.get(key) is not None}


def carried_generation(tok_dir: Path | None) -> dict[str, Any]:
    """The generation settings stored next to a checkpoint's tokenizer by ``from_hf`` ({})."""
    if tok_dir is None or not (tok_dir / GENERATION_CONFIG).is_file():
        return {}
    return json.loads((tok_dir / GENERATION_CONFIG).read_text())


# ---- tokenizer ------------------------------------------------------------------------------


def tokenizer_dir(path: str | Path | None) -> Path | None:
    """The directory of an HF tokenizer (``tokenizer.json`` inside), or None if there is none."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file() and p.name == "tokenizer.json":
        return p.parent
    return p if (p / "tokenizer.json").is_file() else None


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files present in ``src`` to ``dst``; returns their names."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


@dataclass(frozen=True)
class TokenizerInfo:
    """What a conversion needs to know about a tokenizer."""

    path: Path
    length: int
    bos_token_id: int | None
    eos_token_id: int | None


def inspect_tokenizer(path: Path) -> TokenizerInfo:
    """Length and bos/eos ids, found by token string (DeepSeek's, else the tokenizer config's)."""
    from megatron_dscoder.tokenizer import BOS, EOS, load_tokenizer, vocab_size

    tok = load_tokenizer(path)
    config_file = path / "tokenizer_config.json"
    declared = json.loads(config_file.read_text()) if config_file.is_file() else {}

    def lookup(deepseek: str, field: str) -> int | None:
        token_id = tok.token_to_id(deepseek)
        if token_id is None:
            text = declared.get(field)
            text = text.get("content") if isinstance(text, dict) else text
            token_id = tok.token_to_id(text) if isinstance(text, str) else None
        return token_id

    return TokenizerInfo(path, vocab_size(tok), lookup(BOS, "bos_token"), lookup(EOS, "eos_token"))


# ---- safetensors ----------------------------------------------------------------------------


class SafetensorsReader:
    """Lazy reads from an HF directory's safetensors (one file, or shards with an index)."""

    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        index = self.dir / INDEX
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        elif (self.dir / SINGLE).is_file():
            weight_map = {}
        else:
            raise ConversionError(
                f"{self.dir}: no {SINGLE} or {INDEX} (only safetensors checkpoints are read)"
            )
        files = sorted(set(weight_map.values())) or [SINGLE]
        missing = [name for name in files if not (self.dir / name).is_file()]
        if missing:
            raise ConversionError(
                f"{self.dir}: missing safetensors shard(s) {', '.join(missing)} listed in {INDEX}"
            )
        self.files: dict[str, str] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        for name in files:
            with safe_open(str(self.dir / name), framework="pt") as handle:
                for key in handle.keys():
                    self.files[key] = name
                    view = handle.get_slice(key)
                    self._shapes[key] = tuple(view.get_shape())
                    self._dtypes[key] = _ST_DTYPES[view.get_dtype()]
        for key, name in weight_map.items():
            if self.files.get(key) != name:
                raise ConversionError(
                    f"{self.dir / name}: does not hold {key}, which {INDEX} places there"
                )

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def dtype(self, name: str) -> torch.dtype:
        return self._dtypes[name]

    def read(self, name: str, index: tuple[slice, ...] = ()) -> torch.Tensor:
        """``tensor[index]`` of one stored tensor, reading only those bytes."""
        if name not in self.files:
            raise ConversionError(f"{self.dir}: no tensor {name!r} in the safetensors files")
        # Opened per read: the memory map (whose touched pages count as resident) lives only
        # while this one slice is copied out, so resident memory stays about one tensor.
        with safe_open(str(self.dir / self.files[name]), framework="pt") as handle:
            return handle.get_slice(name)[index or (slice(None),)]


def plan_shards(sizes: Iterable[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Greedy, in order: a new shard starts when the next tensor would overflow this one."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    """``model.safetensors`` for one shard, else ``model-00001-of-0000n.safetensors``..."""
    if count == 1:
        return [SINGLE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_shards(
    out_dir: Path, plan: list[list[str]], tensors: Iterator[tuple[str, torch.Tensor]]
) -> int:
    """Write ``tensors`` (arriving in plan order) shard by shard; returns total bytes.

    At most one shard is held in memory. Writes the index json when there are several shards.
    """
    files = shard_file_names(len(plan))
    weight_map: dict[str, str] = {}
    total = 0
    for names, file_name in zip(plan, files, strict=True):
        shard: dict[str, torch.Tensor] = {}
        for expected in names:
            name, tensor = next(tensors)
            if name != expected:
                raise RuntimeError(f"tensor order: got {name}, planned {expected}")
            shard[name] = tensor.contiguous()
            weight_map[name] = file_name
            total += tensor.numel() * tensor.element_size()
        save_file(shard, str(out_dir / file_name), metadata={"format": "pt"})
        logger.info("wrote %s (%d tensors)", file_name, len(shard))
        del shard
    if len(files) > 1:
        write_json(out_dir / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total
