"""Hugging Face interop: DeepSeek-Coder checkpoints both ways between megatron-core and HF Llama.

DeepSeek-Coder is published as ``LlamaForCausalLM``; this package converts a torch_dist
checkpoint (any TP/PP) to such a directory and back, streaming one layer at a time::

    python tools/convert_checkpoint.py to-hf --load out/ckpt --save out/hf --check-logits
    python tools/convert_checkpoint.py from-hf --load deepseek-coder-6.7b-base --save out/ckpt \\
        --tensor-model-parallel-size 2 --check-logits

Modules, one concern each:

* :mod:`~megatron_dscoder.convert.keymap` - the weight-name mapping as data, and the tensor
  reshuffles (per-group QKV, SwiGLU gate/up, vocabulary padding);
* :mod:`~megatron_dscoder.convert.hf` - the HF directory: ``config.json``, tokenizer files,
  safetensors shards and their index;
* :mod:`~megatron_dscoder.convert.megatron` - the torch_dist checkpoint, read and written
  without ever holding the whole model;
* :mod:`~megatron_dscoder.convert.pipeline` - the two directions, validated up front and written
  atomically (a temporary directory renamed into place);
* :mod:`~megatron_dscoder.convert.logits` - the logits parity check on CPU;
* :mod:`~megatron_dscoder.convert.instruct` - an instruct export: `<|EOT|>` as eos, the chat
  template.
"""

from megatron_dscoder.errors import UserError


class ConversionError(UserError, ValueError):
    """A conversion that cannot be done; the message names the file or value at fault."""
