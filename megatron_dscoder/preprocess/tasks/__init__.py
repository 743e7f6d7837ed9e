"""What the tasks of a run do, each reading its own input and writing its own files: the two
passes and finalisation (:mod:`.passes`), one shard (:mod:`.shards`), the near-dedup steps
(:mod:`.dedup`), the merge into the output (:mod:`.merge`)."""
