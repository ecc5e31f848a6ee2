"""One module per stage of a round; posttrain/pipeline.py runs them in order."""
