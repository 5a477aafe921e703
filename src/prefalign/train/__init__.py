"""The training engine: model loading, reference strategies, the loop, checkpoints and the run directory."""
