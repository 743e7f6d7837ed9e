"""Evaluation helpers: the sandbox that runs generated code (:mod:`.sandbox`)."""
