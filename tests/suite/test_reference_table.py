"""A training suite's ``[reference]`` table (`deqbench.suite.train_tables.ReferenceTable`, checked
by `deqbench.suite.train`): the published figure, its band and source, per run through
``[matrix]`` and ``[[include]]``, and ``deqbench validate``'s refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deqbench.cli import main
from deqbench.errors import ConfigError
from deqbench.suite.load import load_suite

# digits and mdeq-cpu-small both declare classification; validating reads no data.
SUITE = """
[suite]
name = "ref"
kind = "train"

[dataset]
name = "digits"

[model]
name = "mdeq-cpu-small"

[recipe]
steps = 2

[reference]
{reference}
"""
GOOD = 'top1 = 75.4\nband = 0.5\nsource = "MDEQ paper, Table 3"'


def write(tmp_path: Path, reference: str, extra: str = "") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(SUITE.format(reference=reference)) + extra)
    return path


def test_a_good_table_gives_each_run_its_figure_band_and_source(fresh_registry, tmp_path):
    (run,) = load_suite(write(tmp_path, GOOD)).runs
    assert run.spec.reference.figure() == ("top1", 75.4)
    assert run.spec.reference.columns() == {
        "reference_metric": "eval_top1",
        "reference_value": 75.4,
        "reference_band": 0.5,
        "reference_source": "MDEQ paper, Table 3",
    }


def test_matrix_and_includes_set_figures_per_run_and_do_not_define_runs(fresh_registry, tmp_path):
    # The base states band and source; the matrix's figure reaches its runs, not the includes.
    extra = """
[matrix]
"deq.solver" = ["broyden", "anderson"]
"reference.top1" = 75.4

[[include]]
"deq.gradient" = "jfb"

[[include]]
"deq.gradient" = "phantom"
"reference.top5" = 92.0
"reference.band" = 0.25
"""
    runs = load_suite(write(tmp_path, 'band = 0.5\nsource = "JR, Table 2"', extra)).runs
    got = [(r.spec.deq.gradient, r.spec.reference.figure(), r.spec.reference.band) for r in runs]
    assert got == [
        ("ift", ("top1", 75.4), 0.5),
        ("ift", ("top1", 75.4), 0.5),
        ("jfb", None, 0.5),
        ("phantom", ("top5", 92.0), 0.25),
    ]
    assert runs[0].options == {"deq.solver": "broyden"}  # the figure is not a run option
    assert runs[3].label == "mdeq-cpu-small gradient=phantom"
    assert runs[2].spec.reference.columns()["reference_metric"] is None


BAD = [
    (
        'miou = 75.1\nband = 1.0\nsource = "MDEQ paper"',
        "reference.miou: a segmentation metric, but dataset 'digits' is for classification; "
        "expected reference.top1 or reference.top5",
    ),
    (
        'top1 = 75.4\nband = 0\nsource = "x"',
        "reference.band: input should be greater than 0, got 0",
    ),
    (
        'top1 = 75.4\nband = -0.5\nsource = "x"',
        "reference.band: input should be greater than 0, got -0.5",
    ),
    (
        'top1 = 75.4\nband = 0.5\nsorce = "x"',
        "reference.sorce: unknown key; did you mean 'source'?",
    ),
    (
        'top1 = 75.4\nband = 0.5\nsource = "  "',
        'reference.source: value error, expected where the figure is published, e.g. "JR paper, '
        "Table 2\", got '  '",
    ),
    ('top1 = 75.4\nsource = "x"', "reference: value error, top1 needs band too"),
    ("top1 = 75.4", "reference: value error, top1 needs band and source too"),
    (
        'top1 = 75.4\ntop5 = 92.4\nband = 0.5\nsource = "x"',
        "reference: value error, give one published figure, not top1 and top5",
    ),
    ('top1 = 175.4\nband = 0.5\nsource = "x"', "reference.top1: input should be less than or"),
    (
        'band = 0.5\nsource = "x"',
        "reference: a band or source, but no run states a published figure; expected "
        "reference.top1, reference.top5 or reference.miou in [reference], [matrix] or an "
        "[[include]]",
    ),
]


@pytest.mark.parametrize(("reference", "message"), BAD)
def test_validate_refuses_a_bad_table_in_one_line(
    fresh_registry, cli, tmp_path, reference, message
):
    path = write(tmp_path, reference)
    result = cli.invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert line.startswith(f"error: {path}: {message}"), line


def test_an_include_with_a_misspelt_reference_key_is_told_the_right_one(fresh_registry, tmp_path):
    extra = '\n[[include]]\n"reference.tpo1" = 70.0\n'
    with pytest.raises(ConfigError, match=r"include\[0\]\.reference\.tpo1: unknown key "
                       r"reference\.tpo1; did you mean 'top1'"):  # fmt: skip
        load_suite(write(tmp_path, GOOD, extra))


def test_an_include_with_a_figure_for_another_task_is_refused_in_its_run(fresh_registry, tmp_path):
    extra = '\n[[include]]\n"reference.top1" = 0.0\n"reference.miou" = 70.0\n'
    with pytest.raises(ConfigError, match=r"give one published figure.*in the run of include"):
        load_suite(write(tmp_path, 'band = 1.0\nsource = "x"', extra))
    extra = '\n[[include]]\n"reference.miou" = 70.0\n'
    with pytest.raises(ConfigError, match=r"reference\.miou: a segmentation metric.*include\[0\]"):
        load_suite(write(tmp_path, 'band = 1.0\nsource = "x"', extra))
