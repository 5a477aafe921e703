"""Supervised fine-tuning: the loss is the negative log-likelihood of the assistant turns."""
