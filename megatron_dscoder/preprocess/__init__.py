"""DeepSeek-Coder's data pipeline: raw code corpus -> Megatron indexed binaries.

One concern per module, in pipeline order:

- :mod:`.sources`     inputs -> ordered tasks (JSONL/.gz/.zst, Parquet, repository checkouts)
- :mod:`.readers`     task -> records; bad input counted by reason, never raised
- :mod:`.filters`     the paper's file filters
- :mod:`.quality`     quality screening: syntax (:mod:`.syntax`: CPython's compiler, tree-sitter),
                      generated code, giant functions
- :mod:`.spill`       hash-partitioned shuffle bringing each repository together (bounded memory)
- :mod:`.imports`     import/include/using extraction and resolution inside a repository
- :mod:`.repo_order`  Algorithm 1: dependency-ordered, path-commented repository samples
- :mod:`.stages`      the partition functions (``map_task``, ``reduce_region``): samples ->
                      decontamination -> MinHash signatures -> FIM -> tokens
- :mod:`.minhash`     vectorised word n-grams, MinHash signatures, LSH band keys
- :mod:`.decontam`    benchmark decontamination (10-gram rule; HumanEval built in)
- :mod:`.dedup`       corpus-wide near-dedup: band-key group-by, verification, components
- :mod:`.shards`      one output shard per partition, finalised without near-duplicates, merged
- :mod:`.engine`      where partition functions run: local process pool or Ray
- :mod:`.fim`         document-level FIM (PSM/SPM) from (seed, sample identity)
- :mod:`.encode`      batched tokenisation into flat numpy arrays, EOS appended
  (output: :mod:`megatron_dscoder.data.indexed`, MMIDIDX v1 ``.bin``/``.idx``, crash-safe)
- :mod:`.stats`       counters, stats JSON, progress bar
- :mod:`.report`      the data report (Table 1 per language, drops per stage, PNG charts)
- :mod:`.pipeline`    the orchestration (two passes, dedup, finalise, merge) over an engine
- :mod:`.train_tokenizer`  byte-level BPE with DeepSeek-Coder's pre-tokenizer and specials

Command lines: ``tools/preprocess_data.py`` and ``tools/train_tokenizer.py``.
"""

from megatron_dscoder.preprocess.pipeline import PipelineConfig, run_pipeline

__all__ = ["PipelineConfig", "run_pipeline"]
