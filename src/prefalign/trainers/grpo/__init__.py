"""Online RL on sampled completions: GRPO (Dr. GRPO and DAPO normalisations) and RLOO."""
