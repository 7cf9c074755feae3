"""Shared fixtures: a fresh plugin registry per test that touches plugins, and a CLI runner."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from deqbench import plugins

# Tests compare against exact references; keep each worker on one thread so runs are steady.
torch.set_num_threads(1)
os.environ.setdefault("DEQBENCH_STRICT_PLUGINS", "0")


@pytest.fixture
def fresh_registry():
    """Rebuild the registry before and after the test, so in-process plugins do not leak."""
    plugins.reset_registry()
    yield plugins.get_registry()
    plugins.reset_registry()


@pytest.fixture
def cli():
    return CliRunner()
