"""Loading and serving models: vLLM engines, .gguf import."""
