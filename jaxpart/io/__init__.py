"""Reading and writing what lives on disk: Hugging Face safetensors, orbax checkpoints, text."""
