"""Text side of generation: incremental detokenization and stop strings."""
