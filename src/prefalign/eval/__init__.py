"""Evaluation of trained runs: probes of what training changed."""
