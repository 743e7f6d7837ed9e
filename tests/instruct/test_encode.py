"""SFT preprocessing: DeepSeek-Coder-Instruct's template, token ids and the loss mask.

The mask is checked token by token against an independent rendering: the ids equal the original
tokenizer's (transformers') encoding of the rendered text, and the masked tokens decode to
exactly the responses plus ``<|EOT|>``. The exported chat template is checked against
transformers' ``apply_chat_template`` byte for byte.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from megatron_dscoder.convert.hf import copy_tokenizer
from megatron_dscoder.convert.instruct import add_chat_template
from megatron_dscoder.data.indexed import read_documents
from megatron_dscoder.instruct.cli import main as sft_main
from megatron_dscoder.instruct.encode import mask_prefix, write_sft
from megatron_dscoder.instruct.read import SFTStats, read_records
from megatron_dscoder.instruct.template import DEFAULT_SYSTEM, render_text
from megatron_dscoder.tokenizer import BOS, EOT, load_tokenizer

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
        {"role": "user", "content": "And <|EOT|> three?"},
        {"role": "assistant", "content": "def add3(a, b, c):\n    return a + b + c"},
    ]
}
ALPACA = {"instruction": "Reverse a list.", "input": "[1, 2]", "output": "xs[::-1]  # <|EOT|>"}


@pytest.fixture(scope="module")
def hf_tok(tiny_tokenizer_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("instruct_tok")
    copy_tokenizer(tiny_tokenizer_dir, out)
    add_chat_template(out)
    return AutoTokenizer.from_pretrained(str(out), local_files_only=True)


def _messages(record: dict) -> list[dict]:
    if "messages" in record:
        return record["messages"]
    user = f"{record['instruction']}\n\n{record['input']}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def test_template_text_is_deepseek_instruct():
    text = render_text(_messages(ALPACA), add_generation_prompt=False)
    assert text == (
        f"{BOS}{DEFAULT_SYSTEM}### Instruction:\nReverse a list.\n\n[1, 2]\n"
        f"### Response:\nxs[::-1]  # <|EOT|>\n{EOT}\n"
    )
    assert DEFAULT_SYSTEM.startswith("You are an AI programming assistant, utilizing the Deepseek")
    assert DEFAULT_SYSTEM.endswith("you will refuse to answer\n")


@pytest.mark.parametrize("record", [CHAT, ALPACA], ids=["chat", "alpaca"])
@pytest.mark.parametrize("generation", [False, True])
def test_hf_chat_template_renders_our_prompt(hf_tok, record, generation):
    messages = _messages(record)
    if generation:
        messages = messages[:-1]
    ours = render_text(messages, add_generation_prompt=generation)
    theirs = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    assert theirs == ours
    assert hf_tok.eos_token == EOT


def write_and_read(tok, record: dict, where) -> list[int]:
    write_sft([record], tok, str(where / "sft"))
    return read_documents(str(where / "sft"))[0].tolist()


def test_ids_and_mask_token_by_token(tiny_tokenizer_dir, hf_tok, tmp_path):
    tok = load_tokenizer(tiny_tokenizer_dir)
    stats = write_sft([CHAT, ALPACA], tok, str(tmp_path / "sft"))
    assert (stats.written, stats.skipped.total()) == (2, 0)
    tokens, lengths = read_documents(str(tmp_path / "sft"))
    masks, mask_lengths = read_documents(mask_prefix(str(tmp_path / "sft")))
    assert masks.dtype == np.uint8 and np.array_equal(lengths, mask_lengths)
    eot = tok.token_to_id(EOT)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for record, a, b in zip([CHAT, ALPACA], bounds[:-1], bounds[1:], strict=True):
        ids, mask = tokens[a:b].tolist(), masks[a:b].tolist()
        messages = _messages(record)
        # the ids are those of the rendered text, except that a literal <|EOT|> in a message
        # stays text: only the template's <|EOT|>s are control ids
        clean = [{**m, "content": m["content"].replace(EOT, "")} for m in messages]
        ids_clean = write_and_read(tok, {"messages": clean}, tmp_path / "clean")
        want = hf_tok(render_text(clean), add_special_tokens=False)["input_ids"]
        assert ids_clean == want
        responses = [m["content"] for m in messages if m["role"] == "assistant"]
        assert ids.count(eot) == len(responses)
        # token by token: the masked runs are exactly "response\n" + <|EOT|>, in order
        runs, run = [], []
        for token, m in zip(ids, mask, strict=True):
            if m:
                run.append(token)
            elif run:
                runs.append(run)
                run = []
        assert [r[-1] for r in runs] == [eot] * len(responses)
        assert [hf_tok.decode(r[:-1]) for r in runs] == [f"{c}\n" for c in responses]
        assert sum(mask) == sum(len(r) for r in runs)


def test_bad_records_skipped_and_counted(tiny_tokenizer_dir, tmp_path, capsys):
    lines = [
        json.dumps(ALPACA),
        "{not json",
        json.dumps({"instruction": "no output"}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        json.dumps(CHAT),
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    args = ["--input", str(src), "--tokenizer-model", str(tiny_tokenizer_dir)]
    outs = []
    for name in ("a", "b"):
        prefix = tmp_path / name / "sft"
        stats = tmp_path / f"{name}.json"
        assert sft_main([*args, "--output-prefix", str(prefix), "--stats-json", str(stats)]) == 0
        outs.append(
            [
                (prefix.parent / f).read_bytes()
                for f in sorted(p.name for p in prefix.parent.iterdir())
            ]
        )
    assert outs[0] == outs[1]  # deterministic
    summary = json.loads(stats.read_text())
    assert summary["records"] == 6 and summary["written"] == 2
    assert summary["skipped_by_reason"] == {
        "malformed_json": 1,
        "bad_alpaca": 1,
        "no_response": 1,
        "bad_messages": 1,
    }


def test_json_array_input(tiny_tokenizer_dir, tmp_path):
    src = tmp_path / "alpaca.json"
    src.write_text(json.dumps([ALPACA, ALPACA]))
    stats = SFTStats()
    records = list(read_records([src], stats))
    assert len(records) == 2


def test_missing_input_is_one_line_error(tiny_tokenizer_dir, tmp_path, capsys):
    args = ["--input", str(tmp_path / "nope.jsonl"), "--tokenizer-model", str(tiny_tokenizer_dir)]
    assert sft_main([*args, "--output-prefix", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: --input {args[1]}: no such file or directory\n"
