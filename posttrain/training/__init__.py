"""Training shared by the trained stages: the Trainer glue, chat formatting, DPO packing, variants."""
