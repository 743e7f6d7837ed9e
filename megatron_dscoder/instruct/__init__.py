"""Instruction data: DeepSeek-Coder-Instruct's chat template (:mod:`.template`), records read
from JSON Lines or JSON arrays with bounded memory and skips counted by reason (:mod:`.read`),
conversations encoded with response-only loss masks (:mod:`.encode`), and
``dscoder-preprocess-sft`` (:mod:`.cli`)."""
