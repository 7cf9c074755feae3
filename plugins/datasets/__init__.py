"""Dataset plugins (filled in by the datasets work)."""
