"""Measuring: wall-clock timing, memory and spectral diagnostics."""
