"""Pushing a round to the Hugging Face Hub, with its model and dataset cards."""
