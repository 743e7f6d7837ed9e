"""DeepSeek-Coder-Instruct's prompt template, as pieces that know whether they carry the loss.

The template is the one published in the instruct models' ``tokenizer_config.json`` (its Jinja
text is :data:`JINJA`, written into exported tokenizers): ``<bos>``, the default system text when
the conversation has no system message, then per turn ``### Instruction:\\n{user}\\n`` and
``### Response:\\n{assistant}\\n<|EOT|>\\n``; the generation prompt is ``### Response:\\n``.

:func:`render` returns the conversation as :class:`TemplatePiece` objects: text, or a control token
named by its string (BOS, ``<|EOT|>``), each flagged ``loss`` when it is part of a response.
A response's loss covers its text, the newline after it and ``<|EOT|>`` (DeepSeek's finetuning
script's target is ``{output}\\n<|EOT|>``); the template's own words and the user's never do.
Encoded run by run (:func:`megatron_dscoder.instruct.encode.text_runs`: consecutive text of
equal loss together; loss boundaries fall after a newline, which DeepSeek-Coder's pre-tokenizer
isolates), the pieces give exactly the ids of ``apply_chat_template`` on the same messages, for
any system text (a system message need not end in a newline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from megatron_dscoder.errors import UserError
from megatron_dscoder.tokenizer import BOS, EOT

DEFAULT_SYSTEM = (
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
    "Deepseek Company, and you only answer questions related to computer science. For "
    "politically sensitive questions, security and privacy issues, and other non-computer "
    "science questions, you will refuse to answer\n"
)
INSTRUCTION = "### Instruction:\n"
RESPONSE = "### Response:\n"
ROLES = ("system", "user", "assistant")

#: The chat template of DeepSeek-Coder-Instruct's ``tokenizer_config.json`` (transformers renders
#: it with ``trim_blocks`` and ``lstrip_blocks``).
JINJA = (
    "{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n"
    "{% endif %}\n{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'system' -%}\n        {%- set ns.found = true -%}\n"
    "    {%- endif -%}\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n"
    "{{" + repr(DEFAULT_SYSTEM) + "}}\n{%- endif %}\n"
    "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n"
    "{{ message['content'] }}\n    {%- else %}\n        {%- if message['role'] == 'user' %}\n"
    "{{'### Instruction:\\n' + message['content'] + '\\n'}}\n        {%- else %}\n"
    "{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif %}\n"
    "    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{'### Response:'}}\n"
    "{% endif %}"
)


class TemplateError(UserError, ValueError):
    """A conversation the template cannot render (the record is skipped and counted under
    ``reason``)."""

    def __init__(self, message: str, reason: str = "bad_messages") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TemplatePiece:
    """Text to encode, or a control token given by its string; ``loss`` marks response tokens."""

    text: str
    control: bool = False
    loss: bool = False


def check_messages(messages: object) -> list[Mapping[str, str]]:
    """The messages of a chat record, or :class:`TemplateError` saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise TemplateError("messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            raise TemplateError(f"message {i}: role must be one of {ROLES}")
        if not isinstance(m.get("content"), str):
            raise TemplateError(f"message {i}: content must be a string")
        if m["role"] == "system" and i:
            raise TemplateError(f"message {i}: a system message may only come first")
    if not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise TemplateError("no non-empty assistant message: nothing to learn", "no_response")
    return messages


def render(
    messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False
) -> list[TemplatePiece]:
    """The template's pieces for ``messages`` (roles system/user/assistant)."""
    pieces = [TemplatePiece(BOS, control=True)]
    if not any(m["role"] == "system" for m in messages):
        pieces.append(TemplatePiece(DEFAULT_SYSTEM))
    for m in messages:
        if m["role"] == "system":
            pieces.append(TemplatePiece(m["content"]))
        elif m["role"] == "user":
            pieces.append(TemplatePiece(INSTRUCTION + m["content"] + "\n"))
        else:
            pieces += [
                TemplatePiece(RESPONSE),
                TemplatePiece(m["content"] + "\n", loss=True),
                TemplatePiece(EOT, control=True, loss=True),
                TemplatePiece("\n"),
            ]
    if add_generation_prompt:
        pieces.append(TemplatePiece(RESPONSE))
    return pieces


def render_text(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
    """The rendered conversation as one string (control tokens as their text)."""
    return "".join(p.text for p in render(messages, add_generation_prompt))


def alpaca_messages(record: Mapping[str, object]) -> list[dict[str, str]]:
    """An Alpaca record as one user and one assistant turn; a non-empty ``input`` follows the
    instruction after a blank line (the template has no slot of its own for it)."""
    instruction, extra, output = (record.get(k) for k in ("instruction", "input", "output"))
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise TemplateError(
            "an Alpaca record needs string fields instruction and output", "bad_alpaca"
        )
    if extra is not None and not isinstance(extra, str):
        raise TemplateError("input must be a string", "bad_alpaca")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return check_messages(
        [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    )


def messages_of(record: object) -> list[Mapping[str, str]]:
    """The conversation of one JSON record: chat (``messages``) or Alpaca."""
    if not isinstance(record, Mapping):
        raise TemplateError("a record must be a JSON object", "not_an_object")
    if "messages" in record:
        return check_messages(record["messages"])
    if "instruction" not in record and "output" not in record:
        keys = ", ".join(repr(k)[:40] for k in list(record)[:5]) or "none"
        raise TemplateError(
            "neither a chat record (messages) nor an Alpaca record (instruction, output); "
            f"its keys: {keys}",
            "unknown_format",
        )
    return alpaca_messages(record)
