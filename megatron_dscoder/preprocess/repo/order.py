"""Repository-level samples: DeepSeek-Coder's Algorithm 1 (dependency-ordered concatenation).

For the files of one repository (Python, Java, C, C++, C#):

1. Build the dependency graph: an edge B -> A when A imports B (resolved by :mod:`.imports`);
   ``in_degree[A]`` is the number of distinct files A depends on.
2. Split it into connected components (edges taken as undirected); each becomes one sample.
3. Order each component by repeatedly taking the remaining file with the **minimum** in-degree,
   then decrementing the in-degree of the files that import it. Taking the minimum rather than
   requiring zero means cycles never stall the order.
4. Ties in the minimum are broken by the file's *dependency level* (the length of its longest
   chain of dependencies between strongly connected components, so files of an import cycle
   that others build on come first), then by a hash of (seed, path): deterministic, and
   independent of input order.
5. Each file is prefixed with a comment giving its path in its language's syntax; files are
   separated by a blank line.

Example: a imports b, b imports c, c and d import each other. Every file starts at in-degree 1;
the cycle {c, d} has level 0, b level 1, a level 2, so the order is c, d, b, a (or d, c, b, a).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter

from megatron_dscoder.preprocess.records import Record, Sample, with_path_comment
from megatron_dscoder.preprocess.repo.imports import RepoIndex, extract


def dependency_edges(records: list[Record], repo: str = "") -> list[set[int]]:
    """``edges[b]`` = the files that import file ``b`` (self-imports ignored)."""
    extracted = [extract(r.lang, r.text) for r in records]
    index = RepoIndex([r.path for r in records], [ns for _, ns in extracted], repo)
    edges: list[set[int]] = [set() for _ in records]
    for importer, (refs, _) in enumerate(extracted):
        for ref in refs:
            for dependency in index.resolve(importer, ref):
                if dependency != importer:
                    edges[dependency].add(importer)
    return edges


def connected_components(edges: list[set[int]]) -> list[list[int]]:
    """Weakly connected components, each sorted, listed by their smallest member."""
    parent = list(range(len(edges)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, targets in enumerate(edges):
        for b in targets:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for node in range(len(edges)):
        groups.setdefault(find(node), []).append(node)
    return sorted(groups.values(), key=lambda g: g[0])


def dependency_levels(edges: list[set[int]]) -> list[int]:
    """Longest chain of dependencies above each file, counted in strongly connected components."""
    n = len(edges)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    component = [-1] * n
    stack: list[int] = []
    order = 0
    components: list[list[int]] = []  # Tarjan emits SCCs in reverse topological order
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = order
        order += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if index[child] < 0:
                    index[child] = low[child] = order
                    order += 1
                    stack.append(child)
                    on_stack[child] = True
                    work.append((child, iter(sorted(edges[child]))))
                elif on_stack[child]:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component[member] = len(components)
                    members.append(member)
                    if member == node:
                        break
                components.append(members)
    level = [0] * len(components)
    for c in reversed(range(len(components))):  # topological order: dependencies first
        for member in components[c]:
            for importer in edges[member]:
                d = component[importer]
                if d != c:
                    level[d] = max(level[d], level[c] + 1)
    return [level[component[node]] for node in range(n)]


def _tiebreak(seed: int, path: str) -> int:
    digest = hashlib.blake2b(path.encode(), digest_size=8, key=seed.to_bytes(8, "little"))
    return int.from_bytes(digest.digest(), "little")


def algorithm1_order(
    nodes: list[int], edges: list[set[int]], paths: list[str], levels: list[int], seed: int
) -> list[int]:
    """Algorithm 1 on one connected component: repeatedly emit the minimum in-degree file.

    ``levels`` comes from :func:`dependency_levels` (computed once per repository).
    """
    in_degree = {node: 0 for node in nodes}
    for node in nodes:
        for importer in edges[node]:
            in_degree[importer] += 1
    tiebreak = {node: (levels[node], _tiebreak(seed, paths[node])) for node in nodes}
    heap = [(in_degree[node], *tiebreak[node], node) for node in nodes]
    heapq.heapify(heap)
    done: set[int] = set()
    order = []
    while heap:
        degree, _, _, node = heapq.heappop(heap)
        if node in done or degree != in_degree[node]:
            continue  # emitted already, or a stale entry from before a decrement
        done.add(node)
        order.append(node)
        for importer in edges[node]:
            in_degree[importer] -= 1
            if importer not in done:
                heapq.heappush(heap, (in_degree[importer], *tiebreak[importer], importer))
    return order


def repo_samples(
    repo: str, records: list[Record], seed: int, counters: Counter[str] | None = None
) -> list[Sample]:
    """One sample per connected component of a repository's dependency graph."""
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.path in seen:
            if counters is not None:
                counters["duplicate_paths"] += 1
            continue
        seen.add(record.path)
        unique.append(record)
    edges = dependency_edges(unique, repo)
    paths = [r.path for r in unique]
    levels = dependency_levels(edges) if any(edges) else []
    samples = []
    for component in connected_components(edges):
        if len(component) == 1:
            order = component
        else:
            order = algorithm1_order(component, edges, paths, levels, seed)
        files = [unique[i] for i in order]
        text = "\n".join(with_path_comment(f.lang, f.path, f.text) for f in files)
        key = f"{repo}\x00{min(paths[i] for i in component)}"
        samples.append(Sample(key, text, repo, tuple(paths[i] for i in order), files[0].lang))
    if counters is not None:
        counters["repositories"] += 1
        counters["files"] += len(unique)
        counters["dependency_edges"] += sum(map(len, edges))
        counters["samples"] += len(samples)
    return samples
