"""Training runs: a model trained with a DEQ layer, evaluated, checkpointed and summarised as one
row."""
