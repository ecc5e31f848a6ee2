"""The run directory and its data contract: atomic stage outputs, fingerprints, Arrow schemas, ranks."""
