"""Models: loading (alias, GGUF with its safetensors cache, local Hugging Face directory), LoRA,
and the run's `final/` directory."""
