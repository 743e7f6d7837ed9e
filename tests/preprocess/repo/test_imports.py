"""Import extraction and resolution inside one repository."""

from __future__ import annotations

from megatron_dscoder.preprocess.repo.imports import Ref, RepoIndex, extract


def resolve(paths: list[str], importer: str, lang: str, text: str, repo: str = "") -> set[str]:
    refs, _ = extract(lang, text)
    namespaces = [[] for _ in paths]
    index = RepoIndex(paths, namespaces, repo)
    i = paths.index(importer)
    return {paths[j] for ref in refs for j in index.resolve(i, ref)}


def test_python_extraction() -> None:
    refs, _ = extract(
        "python", "import os, a.b as c\nfrom ..pkg.mod import (x,\n  y as z)\nfrom . import q\n"
    )
    assert Ref("py", "os") in refs and Ref("py", "a.b") in refs
    assert Ref("py", "pkg.mod", 2, ("x", "y")) in refs
    assert Ref("py", "", 1, ("q",)) in refs


def test_python_extraction_matches_a_full_scan() -> None:
    """Only lines containing ``import`` are tried; the result is that of scanning every line."""
    text = (
        '"""import nothing here"""\nfrom a import (b,\n    import_c,\nimport d)\nimport e, f\r'
        "import g\n  from .h import i  # import\nx = 1\nfrom j import k\nimport"
    )
    refs, _ = extract("python", text)
    assert refs == [  # `import d)` inside the parentheses is an import line of its own
        Ref("py", "d"),
        Ref("py", "e"),
        Ref("py", "f"),
        Ref("py", "a", 0, ("b", "import_c", "import")),
        Ref("py", "h", 1, ("i",)),
        Ref("py", "j", 0, ("k",)),
    ]
    assert extract("python", "x = 1\n") == ([], [])


def test_python_resolution() -> None:
    paths = [
        "src/pkg/__init__.py",
        "src/pkg/core.py",
        "src/pkg/sub/helpers.py",
        "src/pkg/sub/x.py",
        "tests/test_core.py",
        "other/core.py",
    ]
    assert resolve(paths, "tests/test_core.py", "python", "from pkg import core\n") == {
        "src/pkg/core.py"
    }
    assert resolve(paths, "tests/test_core.py", "python", "import pkg\n") == {"src/pkg/__init__.py"}
    assert resolve(paths, "src/pkg/sub/x.py", "python", "from .helpers import h\n") == {
        "src/pkg/sub/helpers.py"
    }
    assert resolve(paths, "src/pkg/sub/x.py", "python", "from .. import core\n") == {
        "src/pkg/core.py"
    }
    assert resolve(paths, "src/pkg/sub/x.py", "python", "import numpy\nimport os.path\n") == set()
    # ambiguous module name: the closest file wins
    assert resolve(paths, "src/pkg/sub/x.py", "python", "import core\n") == {"src/pkg/core.py"}
    assert resolve(paths, "other/core.py", "python", "import pkg.core\n") == {"src/pkg/core.py"}


def test_python_repo_named_after_its_package() -> None:
    paths = ["__init__.py", "decoder.py", "scanner.py"]
    assert resolve(paths, "decoder.py", "python", "from json import scanner\n", repo="json") == {
        "scanner.py"
    }


def test_c_includes() -> None:
    paths = ["include/lib/api.h", "src/api.c", "src/local.h", "third/api.h"]
    text = '#include "local.h"\n#include <lib/api.h>\n# include "missing.h"\n#include <stdio.h>\n'
    assert resolve(paths, "src/api.c", "c", text) == {"src/local.h", "include/lib/api.h"}


def test_java_imports() -> None:
    paths = ["a/com/x/App.java", "a/com/x/util/A.java", "a/com/x/util/B.java", "a/com/x/M.java"]
    assert resolve(paths, "a/com/x/App.java", "java", "import com.x.util.*;\n") == {
        "a/com/x/util/A.java",
        "a/com/x/util/B.java",
    }
    assert resolve(paths, "a/com/x/App.java", "java", "import static com.x.M.run;\n") == {
        "a/com/x/M.java"
    }
    assert resolve(paths, "a/com/x/App.java", "java", "import java.util.List;\n") == set()


def test_csharp_namespaces() -> None:
    paths = ["Program.cs", "Models/User.cs", "Models/Role.cs"]
    texts = [
        "using Acme.Models;\nusing System;\n",
        "namespace Acme.Models;\n",
        "namespace Acme.Models\n{\n}\n",
    ]
    extracted = [extract("c#", t) for t in texts]
    index = RepoIndex(paths, [ns for _, ns in extracted])
    targets = {paths[j] for ref in extracted[0][0] for j in index.resolve(0, ref)}
    assert targets == {"Models/User.cs", "Models/Role.cs"}
