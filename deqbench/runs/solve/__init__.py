"""Solve runs: one cell's forward solve (and, optionally, its backward pass) measured at fixed
weights."""
