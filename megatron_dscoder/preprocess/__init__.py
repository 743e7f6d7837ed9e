"""DeepSeek-Coder's data pipeline: raw code corpus -> Megatron indexed binaries.

One concern per module, in pipeline order:

- :mod:`.options`     ``PreprocessConfig`` (every option, with its flag) and the two ordered
                      stage lists, ``RECORD_STAGES`` and ``SAMPLE_STAGES``
- :mod:`.plan`        inputs -> references the driver plans without reading (byte ranges,
                      compressed files, row groups, repository directories); workers expand them
- :mod:`.sources`     a reference -> ordered chunks (JSONL/.gz/.zst, Parquet, repository checkouts)
- :mod:`.readers`     task -> records; bad input counted by reason, never raised
- :mod:`.filters`     record stage: the paper's file filters
- :mod:`.quality`     record stage: quality screening (syntax via :mod:`.syntax`: CPython's
                      compiler, tree-sitter; generated code; giant functions)
- :mod:`.spill`       hash-partitioned shuffle bringing each repository together (bounded memory)
- :mod:`.imports`     import/include/using extraction and resolution inside a repository
- :mod:`.repo_order`  Algorithm 1: dependency-ordered, path-commented repository samples
- :mod:`.stages`      the partition functions (``map_task``, ``reduce_region``) running the
                      stage lists, each stage timed and its drops counted
- :mod:`.minhash`     sample stages: word hashes, MinHash signatures (and LSH band keys)
- :mod:`.decontam`    sample stage: benchmark decontamination (10-gram rule; HumanEval built in)
- :mod:`.fim`         sample stage: document-level FIM (PSM/SPM) from (seed, sample identity)
- :mod:`.encode`      sample stage: batched tokenisation into flat numpy arrays, EOS appended
  (output: :mod:`megatron_dscoder.data.indexed`, MMIDIDX v1 ``.bin``/``.idx``, crash-safe)
- :mod:`.dedup`       corpus-wide near-dedup on disk: band files, band merges, verification
- :mod:`.dedup_tasks` the dedup as tasks: one per band, one per id range, components
- :mod:`.shards`      one output shard per partition, finalised without near-duplicates, merged
- :mod:`.passes`      the tasks of a run as workers run them (pass 1, bucket plans, pass 2,
                      finalise), each reading its own input and writing its own files
- :mod:`.markers`     completion markers (``done/NAME.json``): a rerun skips finished tasks
- :mod:`.workdir`     the work directory: temporary and swept, or kept (``--work-dir``)
- :mod:`.output`      merge tasks: ``PREFIX.bin/.idx``, or parts and their manifest
- :mod:`.engine`      where tasks run, unordered: local process pool or Ray
- :mod:`.stats`       counters, stats JSON, progress bar
- :mod:`.report`      the data report (Table 1 per language, drops per stage, PNG charts)
- :mod:`.pipeline`    the orchestration (two passes, dedup, finalise, merge) over an engine
- :mod:`.cli`         ``dscoder-preprocess`` (``tools/preprocess_data.py``): flags -> options
- :mod:`.train_tokenizer`  byte-level BPE with DeepSeek-Coder's pre-tokenizer and specials;
  :mod:`.train_tokenizer_cli` is ``dscoder-train-tokenizer`` (``tools/train_tokenizer.py``)

A new stage with a flag is two files: its module (a function ``(items, config, stats) ->
items``) and :mod:`.options` (a field for the flag, one ``Stage(name, enabled, function)`` line
in a list); its docstring shows an example.
"""

# Nothing is imported here: training, conversion and evaluation use single modules of this package
# (the text tokenizer, the chat template) without loading the pipeline and its I/O dependencies.
