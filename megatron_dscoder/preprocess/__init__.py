"""DeepSeek-Coder's data pipeline: raw code corpus -> Megatron indexed binaries.

The rooms, lowest first; each imports only from the ones above it in this list (checked by
``lint-imports``, see the ``[tool.importlinter]`` contracts in ``pyproject.toml``):

- :mod:`.config`, :mod:`.records`, :mod:`.stats`  every knob as plain frozen data; the record,
  sample and encoded-partition types; the counters and their JSON round trip
- :mod:`.inputs`     where bytes come from: plan, sources, readers, compression
- :mod:`.repo`       the repository level: spill shuffle, imports, Algorithm 1 order
- :mod:`.stages`     the per-partition stages and the two ordered stage lists
- :mod:`.partition`  one input chunk or spill region through the stage lists
- :mod:`.cluster`    how tasks run: engines, the work directory, its layout, markers,
  checksums of its files
- :mod:`.dedup`      the near-dedup algorithm on band files (numpy)
- :mod:`.tasks`      what the tasks do: passes, shards, dedup steps, merge
- :mod:`.report`     the stats JSON, the Markdown/PNG report, the progress bar
- :mod:`.tokenizer`  tokenizer training (``dscoder-train-tokenizer``)
- :mod:`.pipeline`   the driver: plan -> pass 1 -> pass 2 -> dedup -> finalize -> merge
- :mod:`.cli`        ``dscoder-preprocess`` (``tools/preprocess_data.py``)

How to add a stage, the cluster data flow and the work-directory layout are each written once:
``docs/ARCHITECTURE.md`` ("A preprocessing stage"), ``docs/cluster.md`` and
:mod:`.cluster.layout`.
"""

# Nothing is imported here: a user of one room (the stage modules in a benchmark, the tokenizer
# trainer) does not load the pipeline and its I/O dependencies.
