"""megatron_dscoder: DeepSeek-Coder pretraining on megatron-core.

Rooms: ``model`` (size registry, GPTModel builder, attention, weight init, FLOPs), ``config``
(frozen run configuration, recipes, command line), ``parallel`` (process groups, megatron-core on
CPU), ``data`` (the MMIDIDX format, blends), ``training`` (entry point, loop, step, checkpoints,
metrics, planner), ``preprocess`` (raw code -> MMIDIDX), ``instruct`` (instruction data),
``convert`` (Hugging Face interop), ``evaluation`` (generation, HumanEval); ``tokenizer.py``.
``docs/ARCHITECTURE.md`` draws the map and the direction of imports.
"""

__version__ = "0.1.0"

import warnings

# megatron-core warns at import time when neither Transformer Engine nor Apex is installed (always
# the case on CPU); the fallbacks it announces are the ones we use deliberately.
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
warnings.filterwarnings("ignore", message="Apex is not installed. Falling back to Torch Norm")
warnings.filterwarnings("ignore", message="full scope is deprecated")
# megatron-core 0.16 calls APIs torch 2.13 renamed or deprecated; they still work.
warnings.filterwarnings("ignore", message="`load_state_dict` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
warnings.filterwarnings(
    "ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning
)
