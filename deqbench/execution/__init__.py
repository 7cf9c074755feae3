"""Executing a suite: planning, the runner loop, worker processes, torch.distributed, resume,
shards and checkpoints."""
