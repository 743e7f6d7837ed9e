"""The cross-file measurement of the repository-level ablation (``benchmarks/repo_ablation.py``).

For a held-out file F that imports files I1..Ik of its repository, F's first tokens are scored
after a fixed number of context tokens in two conditions: *related*, the tail of I1..Ik laid out
as a repository-level sample (Algorithm 1 order, path comments, a blank line between files), and
*unrelated*, the related context of a file of another held-out repository (both conditions use
the same set of windows, only paired differently). The same F tokens are scored in both, at the
same positions, so the difference is what the imported code is worth to the model. A second
reading keeps only the tokens of names defined at the top level of I1..Ik that occur in F and
are visible in the related window, where the imported code can help most directly.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path


def top_level_names(text: str) -> set[str]:
    """Functions, classes and assigned names at the top level of a module (not dunders)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def contexts(gen, heldout: dict, cases: list[dict], length: int) -> list[dict]:
    """Each case's related context (the tail of its imports as a repository-level sample) and
    the unrelated one (the related context of a case from the next held-out repository)."""
    from megatron_dscoder.preprocess.records import with_path_comment

    kept = []
    for case in cases:
        files = heldout[case["repo"]]
        text = "".join(with_path_comment("python", p, files[p]) + "\n" for p in case["imports"])
        ids = gen.encode(text)
        if len(ids) >= length:
            kept.append({**case, "context": ids[-length:]})
    repos = list(dict.fromkeys(c["repo"] for c in kept))
    by_repo = {r: [c for c in kept if c["repo"] == r] for r in repos}
    for k, repo in enumerate(repos):
        other = by_repo[repos[(k + 1) % len(repos)]]
        for i, case in enumerate(by_repo[repo]):
            case["unrelated"] = other[i % len(other)]["context"]
    return [c for c in kept if len(repos) > 1]


def name_mask(gen, case: dict, text: str, ids: list[int], heldout: dict) -> list[bool]:
    """Per scored token of F: inside an occurrence of a name defined at the top level of F's
    imports and visible (as a whole word) in the related context window."""
    window = gen.decode(case["context"])
    files = heldout[case["repo"]]
    names = {n for p in case["imports"] for n in top_level_names(files[p])}
    names = {n for n in names if re.search(rf"\b{re.escape(n)}\b", window)}
    offsets = gen.tok.encode(text, add_special_tokens=False).offsets[: len(ids)]
    spans = [m.span() for n in names for m in re.finditer(rf"\b{re.escape(n)}\b", text)]
    start = text.index("\n") + 1  # not the path comment line
    return [any(a < e and s < b and a >= start for a, b in spans) for s, e in offsets]


def evaluate(hf_dir: Path, heldout: dict, cases: list[dict], scale) -> dict:
    """Mean losses (nats/token) over every scored token of every case, in both conditions."""
    import torch

    from megatron_dscoder.evaluation.generate import Generator
    from megatron_dscoder.preprocess.records import with_path_comment

    gen = Generator(hf_dir, add_bos=False)
    sums = dict.fromkeys(("related", "unrelated", "ident_related", "ident_unrelated"), 0.0)
    tokens, ident, per_case = 0, 0, []
    for case in contexts(gen, heldout, cases, scale.context_tokens):
        text = with_path_comment("python", case["path"], heldout[case["repo"]][case["path"]])
        ids = gen.encode(text)[: scale.score_tokens]
        mask = torch.tensor(name_mask(gen, case, text, ids, heldout))
        row = {"repo": case["repo"], "path": case["path"], "tokens": len(ids),
               "ident_tokens": int(mask.sum())}  # fmt: skip
        for cond in ("related", "unrelated"):
            seq = torch.tensor([case["context" if cond == "related" else cond] + ids])
            with torch.no_grad():
                logits = gen.model(seq).logits[0, scale.context_tokens - 1 : -1].float()
            nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids), reduction="none")
            sums[cond] += float(nll.sum())
            sums[f"ident_{cond}"] += float(nll[mask].sum())
            row[cond] = float(nll.mean())
        tokens, ident = tokens + len(ids), ident + row["ident_tokens"]
        per_case.append(row)
    rel, unrel = sums["related"] / tokens, sums["unrelated"] / tokens
    irel, iunrel = sums["ident_related"] / max(ident, 1), sums["ident_unrelated"] / max(ident, 1)
    return {"loss_related": rel, "loss_unrelated": unrel, "gain": unrel - rel,
            "ident_related": irel, "ident_unrelated": iunrel, "gain_ident": iunrel - irel,
            "scored_tokens": tokens, "ident_tokens": ident, "cases": per_case}  # fmt: skip
