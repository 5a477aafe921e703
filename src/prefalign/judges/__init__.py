"""Judges: score completions of prompts, one float each (reward models, a DPO run's implicit
reward, the refusal rules, user callables), and combine several judges' scores."""
