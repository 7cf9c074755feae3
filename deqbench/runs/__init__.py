"""Kinds of run: what one run of each kind is and how it executes (one module or package per
kind)."""
