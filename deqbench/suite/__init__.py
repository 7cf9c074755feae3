"""Suites: the TOML schema of each kind of suite, validation, overrides and expansion into runs."""
