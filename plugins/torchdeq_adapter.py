"""TorchDEQ's solvers as deqbench solvers (registered only when ``torchdeq`` is installed)."""
