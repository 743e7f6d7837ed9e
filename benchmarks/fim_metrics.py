"""The held-out measurements of the FIM ablation (``benchmarks/fim_ablation.py``) on an HF model.

Split from the ablation's driver so that each stays one concern: this module reads an exported
model and a list of held-out documents and returns numbers; it trains nothing.

- left-to-right loss: mean next-token cross-entropy (nats/token) on plain documents (no FIM),
  each laid out as in training (path comment, EOS before and after it), up to the context;
- held-out FIM loss (Bavarian et al. 2022 read FIM from it long before exact match has signal):
  one random span per document (two character cut points from a hash of its name), laid out as
  in training, PSM ``<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>middle<EOS>`` and
  SPM ``<｜fim▁begin｜><｜fim▁hole｜>suffix<｜fim▁end｜>prefix middle<EOS>``; the mean cross-entropy
  over the middle's tokens, prefix and suffix cut from the outside to fit the context, the same
  tokens in both layouts;
- single-line infilling, on the first ``infill_docs`` documents: one line (at least 4 non-blank
  characters) masked per document, the PSM prompt, greedy decoding until a newline or end of
  sequence; exact match of the stripped line, and edit similarity as partial credit
  (``1 - Levenshtein / max length`` over the tokens of the two stripped lines).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def edit_similarity(got: list[int], want: list[int]) -> float:
    """``1 - Levenshtein(got, want) / max(len)`` over token ids (1.0 for two empty lines)."""
    if not got and not want:
        return 1.0
    row = list(range(len(want) + 1))
    for i, g in enumerate(got, start=1):
        prev, row[0] = row[0], i
        for j, w in enumerate(want, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (g != w))
    return 1.0 - row[-1] / max(len(got), len(want))


def _span_nll(model, context: list[int], middle: list[int], eos: int) -> tuple[float, int]:
    """Summed cross-entropy of ``middle`` after ``context`` (its EOS not counted), token count."""
    import torch

    ids = [*context, *middle, eos]
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float().cpu()
    first = len(context)
    pred = logits[first - 1 : first - 1 + len(middle)]  # [len(middle), vocab]
    nll = torch.nn.functional.cross_entropy(pred, torch.tensor(middle), reduction="sum")
    return float(nll), len(middle)


def _fim_pieces(gen, doc: dict, text: str, seq_length: int) -> tuple[list, list, list]:
    """(prefix, middle, suffix) token ids of the document's random span, cut to the context."""
    cut = sorted(_h(f"{doc['path']}@{doc['i']}#{k}") % (len(text) + 1) for k in (0, 1))
    pre, mid, suf = (gen.encode(t) for t in (text[: cut[0]], text[cut[0] : cut[1]], text[cut[1] :]))
    mid = mid[: seq_length // 2]
    room = seq_length - len(mid) - 5  # the sentinels and the two EOS
    keep_suf = min(len(suf), max(room // 2, room - len(pre)))
    return pre[len(pre) - min(len(pre), room - keep_suf) :], mid, suf[:keep_suf]


def _infill_case(gen, doc: dict, text: str, budget: int) -> tuple[bool, float] | None:
    """(exact match, edit similarity) of the document's masked line, or None without one."""
    lines = text.splitlines(keepends=True)
    usable = [i for i, line in enumerate(lines) if len(line.strip()) >= 4]
    if not usable:
        return None
    k = usable[_h(f"{doc['path']}@{doc['i']}") % len(usable)]
    prefix, answer = "".join(lines[:k]), lines[k].rstrip("\n")
    suffix = "\n" + "".join(lines[k + 1 :]) if lines[k].endswith("\n") else ""
    prefix = gen.decode(gen.encode(prefix)[-budget:])
    suffix = gen.decode(gen.encode(suffix)[:budget])
    got = gen.infill(prefix, suffix, max_new_tokens=48, stop=("\n",))
    sim = edit_similarity(gen.encode(got.strip()), gen.encode(answer.strip()))
    return got.strip() == answer.strip(), sim


def evaluate(
    hf_dir: Path, heldout: list[dict], seq_length: int, infill_docs: int | None = None
) -> dict:
    """Left-to-right loss and FIM loss (PSM, SPM) on every held-out document; single-line
    infilling exact match and edit similarity on the first ``infill_docs`` (default: all)."""
    import torch

    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.preprocess.records import language_of, with_path_comment

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = Generator(hf_dir, add_bos=False, device=device)
    eos, nll, count, hits, cases, sim = gen.ids.eos, 0.0, 0, 0, 0, 0.0
    begin, hole, end = gen.ids.fim_begin, gen.ids.fim_hole, gen.ids.fim_end
    fim = {"psm": [0.0, 0], "spm": [0.0, 0]}
    infill_docs = len(heldout) if infill_docs is None else infill_docs
    for n, doc in enumerate(heldout):
        text = with_path_comment(language_of("", doc["path"]), doc["path"], doc["text"])
        ids = ([eos, *gen.encode(text), eos])[:seq_length]
        with torch.no_grad():
            logits = gen.model(torch.tensor([ids], device=device)).logits[0, :-1].float().cpu()
        target = torch.tensor(ids[1:])
        nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
        count += len(ids) - 1
        pre, mid, suf = _fim_pieces(gen, doc, text, seq_length)
        if mid:  # the same (truncated) prefix, suffix and middle in both layouts
            for layout, context in (
                ("psm", [eos, begin, *pre, hole, *suf, end]),
                ("spm", [eos, begin, hole, *suf, end, *pre]),
            ):
                total, k = _span_nll(gen.model, context, mid, eos)
                fim[layout][0] += total
                fim[layout][1] += k
        case = _infill_case(gen, doc, text, seq_length // 2 - 4) if n < infill_docs else None
        if case is not None:
            hits, sim, cases = hits + case[0], sim + case[1], cases + 1
    return {
        "l2r_loss": nll / max(count, 1),
        "fim_loss_psm": fim["psm"][0] / max(fim["psm"][1], 1),
        "fim_loss_spm": fim["spm"][0] / max(fim["spm"][1], 1),
        "fim_tokens": fim["psm"][1],
        "l2r_tokens": count,
        "infill_em": hits / max(cases, 1),
        "infill_edit_sim": sim / max(cases, 1),
        "infill_cases": cases,
    }
