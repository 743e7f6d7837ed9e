"""An HF export of an instruct model: ``<|EOT|>`` as eos, DeepSeek-Coder-Instruct's chat template.

After it, ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` renders exactly
the prompt that ``--stage sft`` trained on (``megatron_dscoder.instruct.template``), and
``generate`` stops at the end of the response.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_dscoder.convert import ConversionError
from megatron_dscoder.convert.hf import write_json
from megatron_dscoder.instruct.template import JINJA
from megatron_dscoder.tokenizer import BOS, EOT, load_tokenizer


def instruct_eos(tok_dir: Path) -> int:
    """The id of ``<|EOT|>``, the instruct model's end of turn (and its eos)."""
    token_id = load_tokenizer(tok_dir).token_to_id(EOT)
    if token_id is None:
        raise ConversionError(f"{tok_dir}: the tokenizer has no {EOT} token for an instruct model")
    return token_id


def add_chat_template(tok_dir: Path) -> None:
    """Set the chat template in ``tokenizer_config.json``, and ``<|EOT|>`` as eos token (and
    BOS) there and in ``special_tokens_map.json`` (which transformers reads last)."""
    for name, extra in (
        ("tokenizer_config.json", {"chat_template": JINJA}),
        ("special_tokens_map.json", {}),
    ):
        file = tok_dir / name
        if name == "special_tokens_map.json" and not file.is_file():
            continue
        config = json.loads(file.read_text()) if file.is_file() else {}
        config.update(extra, eos_token=EOT, bos_token=BOS)
        write_json(file, config)
