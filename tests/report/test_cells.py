"""Cells of the tables and log lines: numbers, options and columns that keep figures whole."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from deqbench.report.cells import EMPTY, add_columns, fmt, number, options_text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (0.00047, "0.00047"),  # plain decimals down to 1e-4, not "4.7e-04"
        (0.000123456, "0.000123"),
        (20000, "20,000"),  # an integer in full
        (1234567, "1,234,567"),
        (20000.0, "20,000"),
        (1390.2, "1,390"),  # three significant digits, not "1.39e+03"
        (123456.7, "123,000"),
        (999.96, "1,000"),  # rounds up across 1,000: separators, not "1e+03"
        (-1390.2, "-1,390"),
        (12.0, "12"),
        (0.5, "0.5"),
        (93.333, "93.3"),
        (0.0, "0"),
        (1e-12, "1e-12"),  # below 1e-4 scientific notation is the readable form
        (9.99e-5, "9.99e-05"),
        (float("inf"), "inf"),
        (float("nan"), EMPTY),  # an empty CSV cell reads back as NaN
        (None, EMPTY),
        ("", EMPTY),
        (np.float64(1390.2), "1,390"),
        (np.int64(20000), "20,000"),
        (True, "True"),
        ("anderson", "anderson"),
    ],
)
def test_fmt(value, cell):
    assert fmt(value) == cell


def test_number_takes_its_digits():
    assert number(1390.2, digits=2) == "1,400" and number(0.012345, digits=2) == "0.012"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("{}", ""),  # no options: nothing, not "{}"
        ({}, ""),
        ('{"m": 5, "beta": 1.0}', "m=5, beta=1.0"),
        ({"damping": 0.5, "safe": True}, "damping=0.5, safe=true"),
        ({"inner": {"tol": 1e-06, "kind": "rel"}}, "inner.tol=1e-06, inner.kind=rel"),
        ({"milestones": [30, 60]}, "milestones=[30, 60]"),
        (3.0, "3"),
    ],
)
def test_options_text(value, cell):
    assert options_text(value) == cell


def test_numbers_stay_on_one_line_when_the_table_is_narrow():
    # rich folds every column of a too-wide table by default: "0.000" over "47"
    table = Table()
    add_columns(table, ["model", "options", "res", "ms", "NFE"], text=["model", "options"])
    table.add_row("mdeq-cpu-small-wide", "a=1, b=2, c=3", "0.00047", "20,000", "1,390")
    buffer = io.StringIO()
    Console(file=buffer, width=44).print(table)  # all folded: "0.0004" over "7", "20,00" over "0"
    text = buffer.getvalue()
    assert "│ 0.00047 │ 20,000 │ 1,390 │" in text
    assert "mdeq-cpu-small-wide" not in text and "│ mdeq- │" in text  # the names fold instead
