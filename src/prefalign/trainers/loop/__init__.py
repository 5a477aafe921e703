"""The shared training loop: optimiser and schedule, accumulation, checkpoints and exact resume,
the run directory, health checks, progress, early stopping, DDP and FSDP."""
