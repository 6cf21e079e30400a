"""The run: batches, jobs, checkpoints and dead letters, owned by the main thread."""
