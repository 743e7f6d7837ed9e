"""Every kind of HF export loads, and its files agree, under transformers 4.34.1 and the pinned 5.x.

4.34.1 is the version DeepSeek-Coder's published configs name, the oldest this project
promises. It is installed (configs and tokenizers only, no torch) into a throwaway environment
cached under ``.cache/compat/`` (gitignored; the first run needs PyPI, 10 s to a minute),
and reads the exports through ``workers/export_check.py``; the pinned transformers runs the
same checks in-process.

The exports are written by the code ``to-hf`` runs (:func:`export_tokens` and
:func:`write_export_files`), without weights: base (no BOS, the pretraining default), 16K (with
``--bos``), SFT (chat template, ``<|EOT|>``), v1.5 (DeepSeek-LLM's 102,400 rows and tokenizer
structure), and a tokenizer directory taken from an instruct release exported as an instruct
round trip and as a base model (``--chat-template none``). For each: config, generation config
and tokenizer state the same BOS and EOS ids; the tokenizer starts text with BOS exactly when
the policy says so; the chat template renders our generation prompt's ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from megatron_dscoder.config.recipes import EXTEND_CONTEXT
from megatron_dscoder.convert.export_files import export_tokens, write_export_files
from megatron_dscoder.convert.hf import copy_tokenizer, inspect_tokenizer
from megatron_dscoder.instruct.encode import encode_pieces
from megatron_dscoder.instruct.template import JINJA, render
from megatron_dscoder.model.registry import (
    DEEPSEEK_LLM_VOCAB_ROWS,
    MODELS,
    with_long_context,
    with_vocab_size,
)
from megatron_dscoder.preprocess.tokenizer.train import save_tokenizer_dir, train_tokenizer
from megatron_dscoder.tokenizer import BOS, EOS, EOT, load_tokenizer, text_tokenizer, vocab_size
from tests.conftest import stdlib_texts
from tests.launch import REPO

sys.path.insert(0, str(Path(__file__).parent / "workers"))
import export_check

OLDEST = "4.34.1"
PINS = REPO / "requirements-compat.txt"
CHECKER = Path(export_check.__file__)


def old_transformers_python() -> Path:
    """The interpreter of the cached 4.34.1 environment, created on first use (atomically)."""
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()[:12]
    env = REPO / ".cache" / "compat" / f"transformers-{OLDEST}-{digest}"
    python = env / "bin" / "python"
    if (env / ".complete").is_file():
        return python
    env.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{env.name}.partial-", dir=env.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(partial)], check=True)
        install = [sys.executable, "-m", "pip", "--python", str(partial / "bin" / "python"),
                   "install", "--quiet", "--disable-pip-version-check",
                   "-r", str(PINS)]  # fmt: skip
        done = subprocess.run(install, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"installing {PINS.name} failed:\n{done.stderr[-3000:]}"
        (partial / ".complete").write_text(OLDEST + "\n")
        shutil.rmtree(env, ignore_errors=True)
        os.replace(partial, env)  # venv scripts use absolute paths; the interpreter is run directly
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return python


def _run_checker(python: Path, *dirs: str) -> subprocess.CompletedProcess:
    """``export_check.py`` under ``python``, offline, in a clean environment."""
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    cmd = [str(python), str(CHECKER), *dirs]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _instruct_release(src: Path, out: Path) -> Path:
    """``src`` dressed as an instruct release's tokenizer directory: LlamaTokenizerFast,
    ``<|EOT|>`` as eos, the chat template, ``add_bos_token`` true."""
    copy_tokenizer(src, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizerFast", eos_token=EOT, chat_template=JINJA,
                  add_bos_token=True)  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_tokenizer_dir) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("exports")
    llm_tok = save_tokenizer_dir(
        train_tokenizer(stdlib_texts()[:3], vocab_size=800, layout="deepseek-llm"), root / "llm"
    )
    release = _instruct_release(tiny_tokenizer_dir, root / "release")
    coder = with_vocab_size(MODELS["debug"], vocab_size(load_tokenizer(tiny_tokenizer_dir)))
    v15 = with_vocab_size(MODELS["7b-v1.5"], vocab_size(load_tokenizer(llm_tok)))
    eot = load_tokenizer(tiny_tokenizer_dir).token_to_id(EOT)
    bos = load_tokenizer(tiny_tokenizer_dir).token_to_id(BOS)
    kinds = {  # name: (arch, tokenizer, checkpoint metadata, carried generation, chat_template)
        "base": (coder, tiny_tokenizer_dir, {"data": {"bos": False}}, {}, None),
        "16k": (with_long_context(coder, EXTEND_CONTEXT.factor, EXTEND_CONTEXT.rotary_base),
                tiny_tokenizer_dir, {"data": {"bos": True}}, {}, None),
        "sft": (coder, tiny_tokenizer_dir, {"data": {"bos": True, "sft": True}}, {}, None),
        "v1.5": (v15, llm_tok, {"converted_from": {"add_bos": True, "rope_theta": 10000}}, {},
                 None),
        "instruct_roundtrip": (coder, release, {"converted_from": {"add_bos": True}},
                               {"bos_token_id": bos, "eos_token_id": eot}, None),
        "instruct_as_base": (coder, release, {"data": {"bos": False}}, {}, False),
    }  # fmt: skip
    built = {}
    for name, (arch, tok_dir, meta, carried, chat) in kinds.items():
        out = root / name
        copy_tokenizer(tok_dir, out)
        tokens = export_tokens(meta, inspect_tokenizer(tok_dir), carried, chat_template=chat,
                               bos=None)  # fmt: skip
        theta = meta.get("converted_from", {}).get("rope_theta")
        rows = DEEPSEEK_LLM_VOCAB_ROWS if name == "v1.5" else arch.padded_vocab_size()
        write_export_files(out, arch, vocab_rows=rows, dtype=torch.bfloat16, tokens=tokens,
                           carried_generation=carried, theta=theta)  # fmt: skip
        built[name] = {"dir": out, "arch": arch, "tokens": tokens, "rows": rows}
    return built


def _expected_chat_ids(tok_dir: Path) -> list[int]:
    tok = load_tokenizer(tok_dir)
    pieces = render(export_check.CHAT, add_generation_prompt=True)
    controls = {p.text: tok.token_to_id(p.text) for p in pieces if p.control}
    return encode_pieces(pieces, text_tokenizer(tok), controls)[0]


def _assert_agrees(name: str, built: dict, seen: dict) -> None:
    version = seen["transformers"]
    assert "error" not in seen, (name, version, seen.get("error"))
    arch, tokens, config = built["arch"], built["tokens"], seen["config"]
    factor = arch.seq_len_interpolation_factor
    want_rope = {"type": "linear" if factor else "default", "factor": factor,
                 "theta": arch.rotary_base}  # fmt: skip
    assert config["rope"] == want_rope, (name, version)
    assert config["vocab_size"] == built["rows"]
    ids = {"bos_token_id": tokens.bos_id, "eos_token_id": tokens.eos_id}
    for where in ("config", "generation"):
        assert {k: seen[where][k] for k in ids} == ids, (name, version, where)
    tok = seen["tokenizer"]
    assert (tok["bos_token_id"], tok["eos_token_id"]) == (tokens.bos_id, tokens.eos_id), name
    assert tok["starts_with_bos"] == tokens.add_bos, (name, version)
    if tokens.chat_template:
        assert tok["chat_ids"] == _expected_chat_ids(built["dir"]), (name, version)
    else:
        assert tok["chat_ids"] is None, (name, version)


def test_exports_state_one_thing(exports):
    """The decisions themselves: BOS policy and end token per kind (issue cases included)."""
    t = {name: b["tokens"] for name, b in exports.items()}
    assert [t[n].add_bos for n in ("base", "16k", "sft", "v1.5")] == [False, True, True, True]
    assert t["sft"].eos == EOT and t["sft"].chat_template == JINJA
    assert t["instruct_roundtrip"].eos == EOT and t["instruct_roundtrip"].chat_template == JINJA
    assert t["instruct_as_base"].eos == EOS and t["instruct_as_base"].chat_template is None
    v15 = json.loads((exports["v1.5"]["dir"] / "config.json").read_text())
    assert t["v1.5"].eos == EOS and v15["vocab_size"] == 102400 and v15["rope_theta"] == 10000
    raw = json.loads((exports["16k"]["dir"] / "config.json").read_text())
    assert raw["rope_scaling"] == {"type": "linear", "factor": 4.0} and raw["rope_theta"] == 100000
    config = json.loads((exports["instruct_as_base"]["dir"] / "tokenizer_config.json").read_text())
    assert "chat_template" not in config and config["add_bos_token"] is False


def test_every_export_loads_and_agrees_under_the_pinned_transformers(exports):
    import transformers

    assert transformers.__version__.startswith("5.")
    for name, built in exports.items():
        _assert_agrees(name, built, export_check.check(str(built["dir"])))


def test_every_export_loads_and_agrees_under_transformers_4_34(exports):
    python = old_transformers_python()
    dirs = [str(b["dir"]) for b in exports.values()]
    done = _run_checker(python, *dirs)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for name, built in exports.items():
        assert seen[str(built["dir"])]["transformers"] == OLDEST
        _assert_agrees(name, built, seen[str(built["dir"])])


def test_the_three_key_rope_scaling_is_what_4_34_rejects(exports, tmp_path):
    """Guards the test: the form exports used to write fails under 4.34.1."""
    python = old_transformers_python()
    bad = shutil.copytree(exports["16k"]["dir"], tmp_path / "three_keys")
    config = json.loads((bad / "config.json").read_text())
    config["rope_scaling"] = {"type": "linear", "rope_type": "linear", "factor": 4.0}
    (bad / "config.json").write_text(json.dumps(config))
    done = _run_checker(python, str(bad))
    assert "two fields" in json.loads(done.stdout.strip().splitlines()[-1])[str(bad)]["error"]
