"""MDEQ: the multiscale cell, its task heads and the published variants (filled in by the model-zoo work)."""
