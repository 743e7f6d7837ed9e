"""tools/generate.py on real ``LlamaForCausalLM`` models whose greedy output is known in advance.

:func:`~tests.convert.helpers.make_chain_model` sets the weights so that, after any prompt, greedy
decoding emits a chosen chain of token ids; the tests then check the PSM infilling prompt, the
stop at EOS and at ``<|EOT|>``, stop strings and the token budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_dscoder.evaluation import generate
from megatron_dscoder.tokenizer import BOS, EOS, EOT, FIM_BEGIN, FIM_END, FIM_HOLE, load_tokenizer
from tests.convert.helpers import make_chain_model, make_tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("generate")
    tok_dir = make_tokenizer(root / "tok")
    tok = load_tokenizer(tok_dir)
    body = tok.encode(" return a + b").ids
    assert len(body) > 1
    return {
        "tok": tok,
        "body": body,
        "eos": make_chain_model(root / "eos", tok_dir, body + [tok.token_to_id(EOS)]),
        "eot": make_chain_model(root / "eot", tok_dir, body + [tok.token_to_id(EOT)]),
        "loop": make_chain_model(root / "loop", tok_dir, body[:1], loop=True),
    }


def test_completion_stops_at_eos_and_drops_it(models):
    gen = generate.Generator(models["eos"], add_bos=True)
    assert gen.complete("def add(a, b):\n   ", max_new_tokens=50) == " return a + b"
    prompt = gen.prompt_ids("def add(a, b):")
    assert prompt[0] == models["tok"].token_to_id(BOS)


def test_bos_follows_the_model_unless_told(models, tmp_path):
    """The default is the export's ``add_bos_token`` (the policy it was trained with)."""
    import json
    import shutil

    bos = models["tok"].token_to_id(BOS)
    assert generate.Generator(models["eos"]).prompt_ids("x")[0] != bos  # add_bos_token false
    assert generate.Generator(models["eos"], add_bos=True).prompt_ids("x")[0] == bos
    with_bos = shutil.copytree(models["eos"], tmp_path / "with_bos")
    config = json.loads((with_bos / "tokenizer_config.json").read_text())
    (with_bos / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
    assert generate.Generator(with_bos).prompt_ids("x")[0] == bos
    assert generate.Generator(with_bos, add_bos=False).prompt_ids("x")[0] != bos


def test_completion_stops_at_eot(models):
    gen = generate.Generator(models["eot"])
    new = gen.generate_ids(gen.prompt_ids("x = 1"), max_new_tokens=50)
    assert new == models["body"]


def test_fim_prompt_is_psm_with_sentinels_found_by_string(models):
    gen = generate.Generator(models["eos"], add_bos=True)
    tok = models["tok"]
    prefix, suffix = "def f(x):\n", "\n    return y\n"
    ids = gen.fim_prompt_ids(prefix, suffix)
    begin, hole, end = (tok.token_to_id(s) for s in (FIM_BEGIN, FIM_HOLE, FIM_END))
    assert ids == (
        [tok.token_to_id(BOS), begin]
        + tok.encode(prefix).ids
        + [hole]
        + tok.encode(suffix).ids
        + [end]
    )
    # a sentinel string inside user text stays text: the structure cannot be forged
    forged = gen.fim_prompt_ids(FIM_HOLE, "")
    assert forged.count(hole) == 1 and forged[-2] == hole
    assert gen.infill(prefix, suffix, max_new_tokens=50) == " return a + b"


def test_stop_strings_and_token_budget(models):
    gen = generate.Generator(models["loop"])
    first = models["tok"].decode(models["body"][:1])
    text = gen.complete("x", max_new_tokens=5)
    assert text == first * 5
    assert first == " return"
    # generation ends as soon as the stop string appears (2 tokens), the text just before it
    assert len(gen.generate_ids(gen.prompt_ids("x"), max_new_tokens=5, stop=["n r"])) == 2
    assert gen.complete("x", max_new_tokens=5, stop=["n r"]) == " retur"


def test_command_line(models, capsys):
    assert generate.main(["--model", str(models["eos"]), "--prompt", "def add(a, b):\n"]) == 0
    assert capsys.readouterr().out == " return a + b\n"
    assert (
        generate.main(
            ["--model", str(models["eos"]), "--fim-prefix", "A", "--fim-suffix", "B", "--show-full"]
        )
        == 0
    )
    assert capsys.readouterr().out == "A return a + bB\n"
    assert generate.main(["--model", str(models["eos"])]) == 2


def test_missing_fim_tokens_named(tmp_path: Path):
    from tests.convert.helpers import make_chain_model as chain

    tok_dir = make_tokenizer(tmp_path / "tok")
    # drop the FIM sentinels from the tokenizer: infilling must name them
    import json

    data = json.loads((tok_dir / "tokenizer.json").read_text())
    data["added_tokens"] = [
        t for t in data["added_tokens"] if t["content"] not in (FIM_BEGIN, FIM_HOLE, FIM_END)
    ]
    (tok_dir / "tokenizer.json").write_text(json.dumps(data))
    model = chain(tmp_path / "m", tok_dir, [5])
    gen = generate.Generator(model)
    with pytest.raises(ValueError, match="fim"):
        gen.infill("a", "b", max_new_tokens=2)


def test_added_token_text_in_a_prompt_stays_text(models):
    # After the tokenizer trainer's DeepSeek-style flags, the FIM, pad and chat tokens are added
    # tokens that are not special: their literal text in a prompt must not become control ids.
    gen = generate.Generator(models["eos"])
    tok = models["tok"]
    text = f"s = '{FIM_HOLE}' + '<pad>' + '<|EOT|>'"
    ids = gen.encode(text)
    controls = {tok.token_to_id(t) for t in (FIM_HOLE, FIM_BEGIN, FIM_END, EOT, "<pad>", BOS, EOS)}
    assert not controls & set(ids)
    assert gen.decode(ids) == text


def test_repo_completion_runs_with_cross_file_context(models, tmp_path, capsys):
    """``--repo DIR --file PATH``: the file's end completed after retrieved context."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "shapes.py").write_text("class Point:\n    def __init__(self, x):\n")
    (tmp_path / "pkg" / "use.py").write_text("from pkg.shapes import Point\np = Point(1)\n")
    argv = ["--model", str(models["eos"]), "--repo", str(tmp_path), "--file", "pkg/use.py",
            "--max-new-tokens", "50", "--show-full"]  # fmt: skip
    assert generate.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# pkg/shapes.py\nclass Point:") and "# pkg/use.py\nfrom pkg" in out
    assert out.endswith("p = Point(1)\n return a + b\n")
