"""Algorithm 1 and repository samples."""

from __future__ import annotations

from collections import Counter

import pytest

from megatron_dscoder.preprocess.records import Record
from megatron_dscoder.preprocess.repo.order import (
    algorithm1_order,
    connected_components,
    dependency_edges,
    dependency_levels,
    repo_samples,
)


def files(lang: str, sources: dict[str, str]) -> list[Record]:
    return [Record(text=t, repo="o/r", path=p, lang=lang) for p, t in sources.items()]


PLANTED = files(
    "python",
    {
        "a.py": "import b\nx = b.f()\n",
        "b.py": "from c import g\n",
        "c.py": "import d\n",
        "d.py": "import c\n",
    },
)


@pytest.mark.parametrize("seed", range(8))
def test_planted_order_for_every_seed(seed: int) -> None:
    [sample] = repo_samples("o/r", PLANTED, seed)
    assert set(sample.paths[:2]) == {"c.py", "d.py"} and sample.paths[2:] == ("b.py", "a.py")
    assert sample.text.startswith(f"# {sample.paths[0]}\n")
    assert "# b.py\nfrom c import g\n\n# a.py\nimport b\n" in sample.text


def test_tie_break_depends_on_seed_only() -> None:
    firsts = {repo_samples("o/r", PLANTED, seed)[0].paths[0] for seed in range(16)}
    assert firsts == {"c.py", "d.py"}
    again = [repo_samples("o/r", list(reversed(PLANTED)), 3)[0].paths for _ in range(2)]
    assert again[0] == again[1] == repo_samples("o/r", PLANTED, 3)[0].paths


def test_minimum_in_degree_rule_never_stalls_on_cycles() -> None:
    ring = files("python", {f"m{i}.py": f"import m{(i + 1) % 5}\n" for i in range(5)})
    edges = dependency_edges(ring)
    order = algorithm1_order(
        list(range(5)), edges, [r.path for r in ring], dependency_levels(edges), 0
    )
    assert sorted(order) == list(range(5))
    # after the cycle is broken, each file follows the one it imports
    first = order[0]
    assert [ring[i].path for i in order] == [f"m{(first - k) % 5}.py" for k in range(5)]


def test_minimum_in_degree_beats_levels() -> None:
    # z depends on nothing, y on z, x on y and z: plain topological order z, y, x
    chain = files("python", {"x.py": "import y\nimport z\n", "y.py": "import z\n", "z.py": "\n"})
    [sample] = repo_samples("o/r", chain, 0)
    assert sample.paths == ("z.py", "y.py", "x.py")


def test_independent_files_are_separate_samples_and_counted() -> None:
    counters: Counter[str] = Counter()
    recs = files("python", {"a.py": "import b\n", "b.py": "x = 1\n", "solo.py": "y = 2\n"})
    recs.append(Record(text="dup", repo="o/r", path="a.py", lang="python"))
    samples = repo_samples("o/r", recs, 0, counters)
    assert [s.paths for s in samples] == [("b.py", "a.py"), ("solo.py",)]
    assert counters == Counter(
        repositories=1, files=3, dependency_edges=1, samples=2, duplicate_paths=1
    )


def test_c_java_csharp_samples() -> None:
    c = files(
        "c",
        {
            "src/main.c": '#include "util/str.h"\n#include <stdio.h>\n',
            "src/util/str.h": "int len(const char *s);\n",
        },
    )
    assert repo_samples("o/r", c, 0)[0].paths == ("src/util/str.h", "src/main.c")
    assert repo_samples("o/r", c, 0)[0].text.startswith("// src/util/str.h\n")
    java = files(
        "java",
        {
            "src/main/java/com/acme/App.java": "package com.acme;\nimport com.acme.util.Strings;\n",
            "src/main/java/com/acme/util/Strings.java": (
                "package com.acme.util;\nclass Strings {}\n"
            ),
        },
    )
    assert repo_samples("o/r", java, 0)[0].paths[0].endswith("util/Strings.java")
    cs = files(
        "c#",
        {
            "App/Program.cs": "using Acme.Models;\nclass P {}\n",
            "Models/User.cs": "namespace Acme.Models {\n class U {}\n}\n",
        },
    )
    assert repo_samples("o/r", cs, 0)[0].paths == ("Models/User.cs", "App/Program.cs")


def test_components_and_levels() -> None:
    edges = [{1}, {2}, {3}, {2}, set()]  # 0->1->2<->3, 4 alone
    assert connected_components(edges) == [[0, 1, 2, 3], [4]]
    assert dependency_levels(edges) == [0, 1, 2, 2, 0]
