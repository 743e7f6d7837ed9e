"""Chat ids equal transformers' ``apply_chat_template`` for every system text (50 cases).

The reference is transformers itself: a ``PreTrainedTokenizerFast`` over DeepSeek-Coder's
published tokenizer structure (rebuilt from our tiny BPE, ``deepseek_layout``) with
DeepSeek-Coder-Instruct's chat template, BOS and ``<|EOT|>``. Ours are the SFT encoder's ids (a
training conversation) and the generator's chat prompt ids (a generation prompt). System texts
end in every way that matters to the pre-tokenizer (no newline, spaces, punctuation, ``#``
that merges with the next ``###``), followed by each kind of next turn.
"""

from __future__ import annotations

import pytest

from megatron_dscoder.instruct.encode import SFTEncoder, encode_pieces
from megatron_dscoder.instruct.template import JINJA, render
from megatron_dscoder.tokenizer import BOS, EOS, EOT, PAD, load_tokenizer, text_tokenizer

ENDINGS = ("\n", "\n\n", "", " ", "  ", ". ", "#", " #", "\t", ":")
NEXT = {  # what follows the system message; generation cases end in the generation prompt
    "user_assistant": ([("user", "Add two numbers."), ("assistant", "def add(a, b): ...")], False),
    "assistant": ([("assistant", "# done")], False),
    "user_prompt": ([("user", "Sort a list.")], True),
    "prompt": ([], True),
    "two_turns_prompt": (
        [("user", "Hi"), ("assistant", " ok "), ("user", "#2 please")],
        True,
    ),
}


@pytest.fixture(scope="module")
def reference(deepseek_tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(deepseek_tokenizer_dir / "tokenizer.json"),
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        chat_template=JINJA,
    )


def _hf_ids(reference, messages, generation: bool) -> list[int]:
    out = reference.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation, return_dict=False
    )
    return list(out)


def _ours(tok, messages, generation: bool) -> list[int]:
    if not generation:
        return SFTEncoder(tok).encode({"messages": messages})[0].tolist()
    pieces = render(messages, add_generation_prompt=True)
    controls = {p.text: tok.token_to_id(p.text) for p in pieces if p.control}
    return encode_pieces(pieces, text_tokenizer(tok), controls)[0]


def test_system_endings_times_next_turns_equal_apply_chat_template(
    deepseek_tokenizer_dir, reference
):
    tok = load_tokenizer(deepseek_tokenizer_dir)
    results = {}
    for ending in ENDINGS:
        for name, (turns, generation) in NEXT.items():
            messages = [{"role": "system", "content": f"Be terse{ending}"}]
            messages += [{"role": r, "content": c} for r, c in turns]
            results[ending, name] = _ours(tok, messages, generation) == _hf_ids(
                reference, messages, generation
            )
    failed = [key for key, same in results.items() if not same]
    assert len(results) == 50 and not failed, failed


def test_the_old_piecewise_encoding_differs_where_the_issue_was(deepseek_tokenizer_dir, reference):
    """Guards the sweep: encoding the system text apart from ``### Instruction`` differs from
    transformers for a trailing space, so the sweep above can fail."""
    tok = text_tokenizer(load_tokenizer(deepseek_tokenizer_dir))
    messages = [{"role": "system", "content": "Be terse "}, {"role": "user", "content": "x"}]
    apart = [tok.token_to_id(BOS)]
    for text in ("Be terse ", "### Instruction:\nx\n", "### Response:\n"):
        apart += tok.encode(text, add_special_tokens=False).ids
    assert apart != _hf_ids(reference, messages, True)


def test_literal_added_tokens_stay_text_where_transformers_makes_them_control(
    deepseek_tokenizer_dir, reference
):
    """The one difference from DeepSeek's inference-time ids: a literal ``<|EOT|>`` (or BOS,
    EOS) written in a message is text in our ids and a control id in transformers'."""
    tok = load_tokenizer(deepseek_tokenizer_dir)
    messages = [{"role": "user", "content": f"say {EOT} or {EOS}"}]
    ours = _ours(tok, messages, True)
    theirs = _hf_ids(reference, messages, True)
    eot, eos = tok.token_to_id(EOT), tok.token_to_id(EOS)
    assert eot not in ours and eos not in ours
    assert theirs.count(eot) == 1 and theirs.count(eos) == 1
    assert tok.decode(ours, skip_special_tokens=False) == tok.decode(
        theirs, skip_special_tokens=False
    )
