"""Complete or infill code with an HF export of a DeepSeek-Coder model (see convert_checkpoint.py).

    # plain completion, greedy
    python tools/generate.py --model out/hf --prompt $'def quicksort(arr):\\n'
    # fill-in-the-middle: prefix and suffix in, the middle out (DeepSeek's PSM prompt)
    python tools/generate.py --model out/hf --fim-prefix $'def add(a, b):\\n    ' \\
        --fim-suffix $'\\n\\nprint(add(1, 2))\\n'
    # an instruct model: the prompt is the user's turn in DeepSeek-Coder-Instruct's template
    python tools/generate.py --model out/instruct_hf --chat --prompt "Write a quicksort in Python."
    # cross-file completion: the end of FILE, after BM25-retrieved code of the repository's other
    # files (512 tokens, each under its path comment as in pretraining; the paper's CrossCodeEval
    # setup, see megatron_dscoder/evaluation/crossfile.py)
    python tools/generate.py --model out/hf --repo myproject --file pkg/module.py
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
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_dscoder.config.flags import (
    ConfigError,
    OneLineParser,
    add_flags,
    opt,
    require_positive,
    values_from_args,
)
from megatron_dscoder.config.inputs import check_model_dir, read_text_file
from megatron_dscoder.errors import UserError, run_cli
from megatron_dscoder.tokenizer import (
    SpecialTokenIds,
    load_tokenizer,
    special_token_ids,
    text_tokenizer,
)


def truncate_at(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest stop string (all of it when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def model_bos(model_dir: Path) -> bool:
    """Whether prompts of this model start with BOS: the ``add_bos_token`` of its
    ``tokenizer_config.json`` (an export states the policy its checkpoint was trained with),
    else True (DeepSeek's published models)."""
    from megatron_dscoder.tokenizer import read_add_bos

    stated = read_add_bos(Path(model_dir))
    return True if stated is None else stated


class Generator:
    """Greedy (or sampled) generation from an HF causal LM directory, on CPU by default."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        add_bos: bool | None = None,
    ) -> None:
        """``add_bos`` None follows the export (:func:`model_bos`): the BOS policy the model
        was trained with."""
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
        add_bos = model_bos(self.dir) if add_bos is None else add_bos
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
        from megatron_dscoder.instruct.encode import encode_pieces
        from megatron_dscoder.instruct.template import render

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


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """Options of ``dscoder-generate``; each field is its flag."""

    model: str = opt(MISSING, "HF model directory (with tokenizer files)", required=True)
    prompt: str | None = opt(None, "text to complete")
    prompt_file: str | None = opt(None, "read the text to complete from this file")
    chat: bool = opt(False, "the prompt is a user turn of the instruct template")
    system: str | None = opt(None, "with --chat: system message (default: the template's)")
    fim_prefix: str | None = opt(None, "infilling: code before the hole")
    fim_prefix_file: str | None = opt(None, "infilling: read the code before the hole from a file")
    fim_suffix: str | None = opt(None, "infilling: code after the hole")
    fim_suffix_file: str | None = opt(None, "infilling: read the code after the hole from a file")
    max_new_tokens: int = opt(128)
    temperature: float = opt(0.0, "0: greedy (default)")
    top_p: float = opt(0.95)
    seed: int = opt(0)
    stop: tuple[str, ...] = opt((), "stop string (repeatable)", action="append")
    dtype: str = opt("float32", choices=("float32", "bfloat16"))
    device: str = opt("cpu")
    bos: bool | None = opt(
        None,
        "prepend BOS to the prompt (default: as the model was trained: its "
        "tokenizer_config.json's add_bos_token, else yes)",
    )
    repo: str | None = opt(None, "complete --file with cross-file context from this repository")
    file: str | None = opt(None, "with --repo: the file (relative to it) whose end to complete")
    repo_context_tokens: int = opt(
        512, "with --repo: tokens of retrieved context (default: %(default)s, as in the paper)"
    )
    show_full: bool = opt(False, "print prompt + completion (infilling: prefix + middle + suffix)")

    def __post_init__(self) -> None:
        require_positive(self, "max_new_tokens")
        require_positive(self, "repo_context_tokens", allow_zero=True)
        require_positive(self, "temperature", allow_zero=True)
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_flags(parser, GenerateConfig)
    return parser


@dataclass(frozen=True)
class Request:
    """What to generate: a prompt (plain or chat) or the two sides of a hole."""

    config: GenerateConfig
    prompt: str | None
    prefix: str | None
    suffix: str | None

    @property
    def infilling(self) -> bool:
        return self.prefix is not None or self.suffix is not None


def _repo_problem(config: GenerateConfig, request: Request) -> str:
    """What is wrong with a ``--repo`` invocation ('' when nothing)."""
    if request.prompt is not None or request.infilling or config.chat:
        return "--repo completes --file: give no --prompt, --fim-* or --chat with it"
    if not config.file:
        return "--repo needs --file PATH (relative to the repository)"
    if (
        not Path(config.repo or "").is_dir()
        or not (Path(config.repo or "") / config.file).is_file()
    ):
        return f"--file {config.file}: no such file in --repo {config.repo}"
    return ""


def prepare(argv: list[str] | None) -> tuple[Request, Generator]:
    """The options, the texts and the model, loaded before any generation."""
    args = build_parser().parse_args(argv)
    config = GenerateConfig(**values_from_args(GenerateConfig, args))
    request = Request(
        config,
        _text(config.prompt, config.prompt_file),
        _text(config.fim_prefix, config.fim_prefix_file, "--fim-prefix-file"),
        _text(config.fim_suffix, config.fim_suffix_file, "--fim-suffix-file"),
    )
    if config.file is not None and config.repo is None:
        raise UserError("--file needs --repo DIR")
    if config.repo is not None:
        problem = _repo_problem(config, request)
        if problem:
            raise UserError(problem)
        request = dataclasses.replace(
            request, prompt=read_text_file(str(Path(config.repo) / str(config.file)), "--file")
        )
    if (request.prompt is None) == (not request.infilling) or (config.chat and request.infilling):
        raise UserError("give either --prompt/--prompt-file or --fim-prefix/--fim-suffix")
    check_model_dir(config.model)
    torch.manual_seed(config.seed)
    try:
        gen = Generator(
            config.model,
            dtype=getattr(torch, config.dtype),
            device=config.device,
            add_bos=config.bos,
        )
    except OSError as err:  # a model directory without tokenizer or config: named in the message
        raise UserError(str(err)) from None
    return request, gen


def work(plan: tuple[Request, Generator]) -> int:
    """Generate and print the text."""
    request, gen = plan
    config, prompt, prefix, suffix = request.config, request.prompt, request.prefix, request.suffix
    options = dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        stop=list(config.stop),
    )
    if request.infilling:
        middle = gen.infill(prefix or "", suffix or "", **options)
        text = f"{prefix or ''}{middle}{suffix or ''}" if config.show_full else middle
    elif config.chat:
        ids = gen.chat_prompt_ids(prompt or "", config.system)
        completion = gen.text_after(ids, **options).removesuffix("\n")
        text = f"{prompt}\n{completion}" if config.show_full else completion
    else:
        prompt = prompt or ""
        if config.repo is not None:
            from megatron_dscoder.evaluation.crossfile import cross_file_prompt

            def count(text: str) -> int:
                return len(gen.encode(text))

            prompt, _ = cross_file_prompt(
                config.repo, str(config.file), prompt, count, budget=config.repo_context_tokens
            )
        completion = gen.complete(prompt, **options)
        text = prompt + completion if config.show_full else completion
    sys.stdout.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``dscoder-generate``; the exit status of :func:`megatron_dscoder.errors.run_cli`."""
    return run_cli(lambda: prepare(argv), work, user_errors=(OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
