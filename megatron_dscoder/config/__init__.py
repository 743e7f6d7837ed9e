"""Run configuration: frozen dataclasses, per-size recipes, and the command line that fills them."""
