"""MDEQ: the multiscale cell, its task heads and the published variants."""
