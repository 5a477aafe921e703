"""What every trainer and the evaluation share: the forward pass and its log-probs (`forward`),
model loading and saving (`models`), the held-out metrics and the run's records (manifest,
metrics log). It stands on `data` and `losses`; nothing here imports a trainer or `eval`."""
