"""Complete or infill code with an HF export of a DeepSeek-Coder model (see convert_checkpoint.py).

    # plain completion, greedy
    python tools/generate.py --model out/hf --prompt $'def quicksort(arr):\\n'
    # fill-in-the-middle: prefix and suffix in, the middle out (DeepSeek's PSM prompt)
    python tools/generate.py --model out/hf --fim-prefix $'def add(a, b):\\n    ' \\
        --fim-suffix $'\\n\\nprint(add(1, 2))\\n'
    # an instruct model: the prompt is the user's turn in DeepSeek-Coder-Instruct's template
    python tools/generate.py --model out/instruct_hf --chat --prompt "Write a quicksort in Python."
    # CPU toy run on the debug model exported (with a tokenizer) by convert_checkpoint.py's toy run
    python tools/generate.py --model out/toy_hf --prompt "import os" --max-new-tokens 16

The infilling prompt is ``<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>``, built from
token ids, so a prefix that happens to contain a sentinel string cannot change the structure.
Every special token is found by its string in the tokenizer (never by id). Generation stops at
the end-of-sentence token or ``<|EOT|>`` (and, for callers such as the HumanEval harness, at any
given stop string); those are not part of the returned text. Loading is offline and never runs
code from the model directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from megatron_dscoder.config.arg_types import (
    InputError,
    check_model_dir,
    non_negative_float,
    positive_int,
    probability,
    read_text_file,
)
from megatron_dscoder.config.flags import OneLineParser
from megatron_dscoder.preprocess.encode import text_tokenizer
from megatron_dscoder.tokenizer import SpecialTokenIds, load_tokenizer, special_token_ids


def truncate_at(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest stop string (all of it when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


class Generator:
    """Greedy (or sampled) generation from an HF causal LM directory, on CPU by default."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        add_bos: bool = True,
    ) -> None:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.dir = Path(model_dir)
        # Added-token strings in user text (``<pad>``, a FIM sentinel) stay text, whatever the
        # tokenizer flags special: the only control ids are the ones the prompt builders insert.
        self.tok = text_tokenizer(load_tokenizer(self.dir))
        self.ids: SpecialTokenIds = special_token_ids(self.tok, require=(), source=str(self.dir))
        self.model = (
            AutoModelForCausalLM.from_pretrained(str(self.dir), dtype=dtype, local_files_only=True)
            .to(device)
            .eval()
        )
        self.device = device
        self.add_bos = add_bos and self.ids.bos is not None
        self.stop_ids = [i for i in (self.ids.eos, self.ids.eot) if i is not None]

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (special-token strings inside it are ordinary text)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, prompt: str) -> list[int]:
        return ([self.ids.bos] if self.add_bos else []) + self.encode(prompt)

    def chat_prompt_ids(self, user: str, system: str | None = None) -> list[int]:
        """One user turn (and a system message, else the template's default) rendered with
        DeepSeek-Coder-Instruct's template, ending in the generation prompt ``### Response:``."""
        from megatron_dscoder.preprocess.chat_template import render
        from megatron_dscoder.preprocess.sft import encode_pieces

        messages = [{"role": "system", "content": system}] if system is not None else []
        pieces = render([*messages, {"role": "user", "content": user}], add_generation_prompt=True)
        controls = {p.text: self.tok.token_to_id(p.text) for p in pieces if p.control}
        if None in controls.values():
            special_token_ids(self.tok, require=("bos",), source=str(self.dir), purpose="--chat")
        return encode_pieces(pieces, self.tok, controls)[0]

    def fim_prompt_ids(self, prefix: str, suffix: str) -> list[int]:
        """``[bos] <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜>`` (PSM order)."""
        if not self.ids.has_fim:
            special_token_ids(
                self.tok,
                require=("fim_begin", "fim_hole", "fim_end"),
                source=str(self.dir),
                purpose="fill-in-the-middle",
            )
        bos = [self.ids.bos] if self.add_bos else []
        return (
            bos
            + [self.ids.fim_begin]
            + self.encode(prefix)
            + [self.ids.fim_hole]
            + self.encode(suffix)
            + [self.ids.fim_end]
        )

    @torch.no_grad()
    def generate_ids(
        self,
        ids: list[int],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
    ) -> list[int]:
        """New token ids after ``ids``, ending before EOS/EOT (or once a stop string appears)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        prompt_len = len(ids)
        generator = self

        class StopStrings(StoppingCriteria):
            def __call__(
                self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
            ) -> torch.Tensor:
                text = generator.decode(input_ids[0, prompt_len:].tolist())
                done = any(s in text for s in stop)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        inputs = torch.tensor([ids], device=self.device)
        sample = temperature > 0
        out = self.model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=top_p if sample else None,
            top_k=None,
            eos_token_id=self.stop_ids or None,
            pad_token_id=self.ids.pad if self.ids.pad is not None else (self.stop_ids or [0])[0],
            stopping_criteria=StoppingCriteriaList([StopStrings()]) if stop else None,
        )
        new = out[0, prompt_len:].tolist()
        for i, token in enumerate(new):
            if token in self.stop_ids:
                return new[:i]
        return new

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def text_after(self, ids: list[int], *, stop: Sequence[str] = (), **options: Any) -> str:
        """The text generated after the prompt ``ids``, cut at the first stop string
        (``options``: those of :meth:`generate_ids`)."""
        return truncate_at(self.decode(self.generate_ids(ids, stop=stop, **options)), stop)

    def complete(self, prompt: str, **options: Any) -> str:
        """The continuation of ``prompt`` (without the prompt), cut at the first stop string."""
        return self.text_after(self.prompt_ids(prompt), **options)

    def infill(self, prefix: str, suffix: str, **options: Any) -> str:
        """The middle between ``prefix`` and ``suffix``."""
        return self.text_after(self.fim_prompt_ids(prefix, suffix), **options)


def _text(value: str | None, path: str | None, flag: str = "--prompt-file") -> str | None:
    return read_text_file(path, flag) if path is not None else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model directory (with tokenizer files)")
    p.add_argument("--prompt", help="text to complete")
    p.add_argument("--prompt-file", help="read the text to complete from this file")
    p.add_argument(
        "--chat", action="store_true", help="the prompt is a user turn of the instruct template"
    )
    p.add_argument("--system", help="with --chat: system message (default: the template's)")
    p.add_argument("--fim-prefix", help="infilling: code before the hole")
    p.add_argument("--fim-prefix-file")
    p.add_argument("--fim-suffix", help="infilling: code after the hole")
    p.add_argument("--fim-suffix-file")
    p.add_argument("--max-new-tokens", type=positive_int, default=128)
    p.add_argument(
        "--temperature", type=non_negative_float, default=0.0, help="0: greedy (default)"
    )
    p.add_argument("--top-p", type=probability, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    p.add_argument(
        "--show-full",
        action="store_true",
        help="print prompt + completion (infilling: prefix + middle + suffix)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prompt = _text(args.prompt, args.prompt_file)
        prefix = _text(args.fim_prefix, args.fim_prefix_file, "--fim-prefix-file")
        suffix = _text(args.fim_suffix, args.fim_suffix_file, "--fim-suffix-file")
        check_model_dir(args.model)
    except InputError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    infilling = prefix is not None or suffix is not None
    if (prompt is None) == (not infilling) or (args.chat and infilling):
        sys.stderr.write("error: give either --prompt/--prompt-file or --fim-prefix/--fim-suffix\n")
        return 2
    torch.manual_seed(args.seed)
    try:
        gen = Generator(
            args.model,
            dtype=getattr(torch, args.dtype),
            device=args.device,
            add_bos=not args.no_bos,
        )
    except OSError as err:  # a model directory without tokenizer or config: named in the message
        sys.stderr.write(f"error: {err}\n")
        return 2
    options = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        stop=args.stop,
    )
    if infilling:
        middle = gen.infill(prefix or "", suffix or "", **options)
        text = f"{prefix or ''}{middle}{suffix or ''}" if args.show_full else middle
    elif args.chat:
        ids = gen.chat_prompt_ids(prompt, args.system)
        completion = gen.text_after(ids, **options).removesuffix("\n")
        text = f"{prompt}\n{completion}" if args.show_full else completion
    else:
        completion = gen.complete(prompt, **options)
        text = prompt + completion if args.show_full else completion
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
