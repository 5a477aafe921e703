"""DPO and its relatives: preference splits, the reference model's log-probs and their cache."""
