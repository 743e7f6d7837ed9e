"""What a transformers version reads from HF export directories (configs and tokenizers only).

    python tests/convert/workers/export_check.py DIR [DIR ...]   # prints one JSON object

Standalone on purpose: it runs under an old transformers in an environment without torch or
this project, and in-process under the pinned one (:func:`check`). A directory that fails to
load reports the error's first line instead of values.
"""

from __future__ import annotations

import json
import sys

SAMPLE = "def add(a, b):\n    return a + b\n"
CHAT = [{"role": "system", "content": "Be terse "}, {"role": "user", "content": "Sort a list."}]


def _rope(config) -> dict:
    params = getattr(config, "rope_parameters", None)
    if params:
        params = dict(params)
    else:
        params = {**(config.rope_scaling or {}), "rope_theta": config.rope_theta}
    kind = params.get("rope_type", params.get("type", "default"))
    return {"type": kind, "factor": params.get("factor"), "theta": params.get("rope_theta")}


def check(path: str) -> dict:
    """Config, generation config and tokenizer facts of one export, as this version reads them."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    out: dict = {"transformers": transformers.__version__}
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        generation = GenerationConfig.from_pretrained(path, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        out["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
        return out
    out["config"] = {
        "rope": _rope(config),
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    }
    out["generation"] = {"bos_token_id": generation.bos_token_id,
                         "eos_token_id": generation.eos_token_id}  # fmt: skip
    ids = tok(SAMPLE)["input_ids"]
    out["tokenizer"] = {
        "length": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "starts_with_bos": tok.bos_token_id is not None and ids[0] == tok.bos_token_id,
        "chat_ids": None,
    }
    if getattr(tok, "chat_template", None):
        chat = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)
        chat = chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat
        out["tokenizer"]["chat_ids"] = list(chat)
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps({p: check(p) for p in sys.argv[1:]}) + "\n")
