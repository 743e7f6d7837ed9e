"""The repository level (DeepSeek-Coder section 2.2): the hash-partitioned shuffle that brings a
repository together (:mod:`.spill`), its imports resolved (:mod:`.imports`), and its files in
Algorithm 1 order (:mod:`.order`)."""
