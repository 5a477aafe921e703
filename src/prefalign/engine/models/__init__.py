"""Models: loading (alias, GGUF with its safetensors cache, local Hugging Face directory), LoRA,
the run's `final/` directory, and reading a finished run's reference and policy back."""
