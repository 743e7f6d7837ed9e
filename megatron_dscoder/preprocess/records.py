"""Record types shared by all stages, language names, and per-language path comments.

A :class:`Record` is one source file (text + repository + path + language). Stages turn
records into :class:`Sample` objects (one training document each: a dependency-ordered
repository component, or a single file). Language names are normalised to lower-case
canonical names (``python``, ``c++``, ``c#`` ...) from either a record's ``lang`` field
(The Stack spells them ``Python``, ``C++``, ``C#``) or the file extension.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Languages whose files are grouped per repository and ordered by their imports
#: (DeepSeek-Coder §2.2 / Algorithm 1). Everything else is one sample per file.
REPO_LEVEL_LANGUAGES = frozenset({"python", "java", "c", "c++", "c#"})


@dataclass(slots=True)
class Record:
    """One source file as read from the input."""

    text: str
    repo: str = ""
    path: str = ""
    lang: str = ""


#: A document before tokenisation: text pieces (encoded separately) and literal token ids
#: (FIM sentinels).
Piece = str | int


@dataclass(slots=True)
class Sample:
    """One output document before tokenisation.

    ``key`` identifies the sample independently of worker count and order; FIM randomness is
    derived from it. ``paths`` lists the files concatenated into ``text``, in order.
    """

    key: str
    text: str
    repo: str
    paths: tuple[str, ...]
    lang: str


@dataclass
class EncodedPartition:
    """The tokens of consecutive documents (concatenated) and their lengths."""

    tokens: np.ndarray
    lengths: np.ndarray

    @staticmethod
    def empty(dtype: npt.DTypeLike) -> EncodedPartition:
        return EncodedPartition(np.empty(0, dtype=dtype), np.empty(0, dtype=np.int32))


_EXTENSIONS: dict[str, str] = {
    "py": "python", "pyi": "python", "pyw": "python", "pyx": "cython", "pxd": "cython",
    "java": "java", "c": "c", "h": "c", "cc": "c++", "cpp": "c++", "cxx": "c++", "c++": "c++",
    "hh": "c++", "hpp": "c++", "hxx": "c++", "h++": "c++", "ipp": "c++", "inl": "c++",
    "cu": "cuda", "cuh": "cuda", "cs": "c#", "js": "javascript", "mjs": "javascript",
    "cjs": "javascript", "jsx": "javascript", "ts": "typescript", "tsx": "typescript",
    "go": "go", "rs": "rust", "rb": "ruby", "php": "php", "kt": "kotlin", "kts": "kotlin",
    "scala": "scala", "swift": "swift", "m": "objective-c", "mm": "objective-c++",
    "sh": "shell", "bash": "shell", "zsh": "shell", "ps1": "powershell", "pl": "perl",
    "pm": "perl", "r": "r", "lua": "lua", "hs": "haskell", "jl": "julia", "dart": "dart",
    "ex": "elixir", "exs": "elixir", "erl": "erlang", "clj": "clojure", "lisp": "common-lisp",
    "el": "emacs-lisp", "scm": "scheme", "ml": "ocaml", "fs": "f#", "f90": "fortran",
    "f": "fortran", "for": "fortran", "vb": "visual-basic", "sql": "sql", "html": "html",
    "htm": "html", "xhtml": "html", "css": "css", "scss": "scss", "less": "less",
    "xml": "xml", "xsl": "xslt", "xslt": "xslt", "json": "json", "yaml": "yaml", "yml": "yaml",
    "toml": "toml", "ini": "ini", "cfg": "ini", "md": "markdown", "rst": "restructuredtext",
    "tex": "tex", "txt": "text", "cmake": "cmake", "mk": "makefile", "proto": "protocol-buffer",
    "vue": "vue", "sv": "systemverilog", "v": "verilog", "vhd": "vhdl", "asm": "assembly",
    "s": "assembly", "bat": "batchfile", "cmd": "batchfile", "vim": "vim", "zig": "zig",
    "nim": "nim", "groovy": "groovy", "gradle": "groovy", "sol": "solidity", "tf": "hcl",
    "dockerfile": "dockerfile", "ipynb": "jupyter-notebook",
}  # fmt: skip

_FILENAMES: dict[str, str] = {
    "makefile": "makefile", "gnumakefile": "makefile", "dockerfile": "dockerfile",
    "cmakelists.txt": "cmake", "sconstruct": "python", "sconscript": "python",
}  # fmt: skip

_ALIASES: dict[str, str] = {
    "py": "python", "python3": "python", "cpp": "c++", "cplusplus": "c++", "cxx": "c++",
    "csharp": "c#", "c-sharp": "c#", "cs": "c#", "js": "javascript", "ts": "typescript",
    "yml": "yaml", "bash": "shell", "sh": "shell", "md": "markdown", "golang": "go",
    "objective-c": "objective-c", "objc": "objective-c", "jupyter notebook": "jupyter-notebook",
    "visual basic": "visual-basic", "protocol buffer": "protocol-buffer",
    "emacs lisp": "emacs-lisp", "common lisp": "common-lisp",
}  # fmt: skip


def language_of(lang: str, path: str) -> str:
    """Canonical language name from ``lang``, else from the path's extension ('' if unknown)."""
    if lang:
        low = lang.strip().lower()
        return _ALIASES.get(low, low)
    name = posixpath.basename(path.replace("\\", "/")).lower()
    if name in _FILENAMES:
        return _FILENAMES[name]
    _, dot, ext = name.rpartition(".")
    return _EXTENSIONS.get(ext, "") if dot else ""


_HASH = ("# ", "")
_SLASH = ("// ", "")
_XML = ("<!-- ", " -->")
_DASH = ("-- ", "")
_COMMENT_SYNTAX: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        ("python", "cython", "shell", "ruby", "perl", "r", "julia", "elixir", "powershell",
         "yaml", "toml", "makefile", "dockerfile", "cmake", "nim", "ini", "hcl"), _HASH),
    **dict.fromkeys(
        ("c", "c++", "c#", "cuda", "java", "javascript", "typescript", "go", "rust", "kotlin",
         "scala", "swift", "php", "dart", "groovy", "objective-c", "objective-c++", "f#",
         "solidity", "zig", "protocol-buffer", "verilog", "systemverilog", "scss", "less"),
        _SLASH),
    **dict.fromkeys(("html", "xml", "xslt", "markdown", "vue"), _XML),
    **dict.fromkeys(("sql", "lua", "haskell", "vhdl", "elm", "ada"), _DASH),
    **dict.fromkeys(("common-lisp", "emacs-lisp", "scheme", "clojure", "assembly"), (";; ", "")),
    **dict.fromkeys(("tex", "erlang", "matlab", "prolog"), ("% ", "")),
    "css": ("/* ", " */"), "fortran": ("! ", ""), "vim": ('" ', ""), "batchfile": ("REM ", ""),
    "restructuredtext": (".. ", ""), "ocaml": ("(* ", " *)"),
}  # fmt: skip


def path_comment(lang: str, path: str) -> str:
    """The one-line comment giving ``path`` in ``lang``'s syntax ('' if it has none, e.g. JSON)."""
    syntax = _COMMENT_SYNTAX.get(lang)
    if syntax is None or not path:
        return ""
    start, end = syntax
    return f"{start}{path}{end}"


def with_path_comment(lang: str, path: str, text: str) -> str:
    """``text`` prefixed with its path comment line; a final newline is added if missing."""
    if not text.endswith("\n"):
        text += "\n"
    comment = path_comment(lang, path)
    return f"{comment}\n{text}" if comment else text
