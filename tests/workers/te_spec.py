"""Which modules of megatron-core's Transformer Engine GPT model save an ``_extra_state``,
derived from megatron-core's own sources (TE itself cannot be imported without CUDA).

* the layer: ``get_gpt_layer_with_transformer_engine_spec()`` is run with its TE spec provider
  replaced by one that hands out marker classes named after what ``TESpecProvider`` returns
  (read from that class's source), so the spec's own code places them;
* the block's final norm: ``TransformerBlock`` uses ``LayerNormImpl``, ``TENorm`` with TE;
* a TE module's state dict holds ``_extra_state`` (TE's base module and its norm ops define
  ``get_extra_state``) unless megatron-core's wrapper builds its sharded state dict from an
  empty dict, as ``TEDotProductAttention`` does without a learnable softmax offset.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import megatron.core


def _source(relative: str) -> ast.Module:
    return ast.parse((Path(megatron.core.__file__).parent / relative).read_text())


def provider_returns() -> dict[str, object]:
    """``TESpecProvider``'s method -> the TE class name it returns (or its constant)."""
    tree = _source("extensions/transformer_engine_spec_provider.py")
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TESpecProvider")
    out: dict[str, object] = {}
    for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        for ret in (n for n in ast.walk(fn) if isinstance(n, ast.Return)):
            if isinstance(ret.value, ast.Name) and ret.value.id.startswith("TE"):
                out[fn.name] = ret.value.id
            elif isinstance(ret.value, ast.Constant):
                out[fn.name] = ret.value.value
    return out


def drops_extra_state(te_class: str) -> bool:
    """Whether megatron-core's ``te_class.sharded_state_dict`` starts from ``state_dict = {}``."""
    tree = _source("extensions/transformer_engine.py")
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == te_class):
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "sharded_state_dict":
                return any(
                    isinstance(n, ast.Assign)
                    and isinstance(n.value, ast.Dict)
                    and not n.value.keys
                    and any(isinstance(t, ast.Name) and t.id == "state_dict" for t in n.targets)
                    for n in ast.walk(fn)
                )
    return False


def block_norm() -> str:
    """The class ``TransformerBlock`` uses for its final norm when TE is installed."""
    tree = _source("transformer/transformer_block.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "LayerNormImpl" for t in node.targets
        ):
            return node.value.id  # the first assignment: the HAVE_TE branch
    raise AssertionError("no LayerNormImpl in transformer_block.py")


def layer_te_modules() -> dict[str, str]:
    """Submodule path in a TE GPT layer -> the TE class the spec puts there."""
    from megatron.core.models.gpt import gpt_layer_specs
    from megatron.core.transformer.spec_utils import ModuleSpec

    returns = provider_returns()
    markers = {name: type(name, (), {}) for name in set(returns.values()) if isinstance(name, str)}

    class Recording:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __getattr__(self, method: str):
            value = returns[method]
            return lambda *a, **k: markers.get(value, value)

    original = getattr(gpt_layer_specs, "TESpecProvider", None)
    gpt_layer_specs.TESpecProvider = Recording
    try:
        spec = gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    finally:
        if original is None:
            del gpt_layer_specs.TESpecProvider
        else:
            gpt_layer_specs.TESpecProvider = original
    found: dict[str, str] = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, ModuleSpec):
            walk(node.module, path)
            walk(node.submodules, path)
        elif inspect.isclass(node) and node in markers.values():
            found[path] = node.__name__
        elif dataclasses.is_dataclass(node) and not inspect.isclass(node):
            for f in dataclasses.fields(node):
                walk(getattr(node, f.name), f"{path}.{f.name}" if path else f.name)

    walk(spec, "")
    return found


def extra_state_modules() -> dict[str, str]:
    """Module path in a TE GPTModel (``decoder.layers.*`` stands for every layer) -> TE class,
    for the modules whose sharded state dict holds an ``_extra_state``."""
    layer = {
        f"decoder.layers.{path}": cls
        for path, cls in layer_te_modules().items()
        if not drops_extra_state(cls)
    }
    return {**layer, "decoder.final_layernorm": block_norm()}
