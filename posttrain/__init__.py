"""posttrain: Llama 3-style post-training rounds."""
