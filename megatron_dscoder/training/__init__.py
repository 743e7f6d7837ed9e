"""The training loop's parts: data feeding, the parallel step, logging."""
