"""``--resume``: the suite check, the plan and the rewritten report files."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deqbench import __version__, plugins
from deqbench.errors import ConfigError
from deqbench.execution.resume import ResumePlan, plan_resume, suite_record
from deqbench.execution.shard import Shard, fingerprint
from deqbench.report.results import ReportWriter, companion
from deqbench.runs.solve.kind import SOLVE
from deqbench.runs.train.kind import TRAIN as TRAIN_KIND
from deqbench.suite.load import load_suite
from deqbench.testing.train_toys import TrainToys

TRAIN = """
[suite]
name = "tiny"
kind = "train"
seed = 3

[dataset]
name = "blobs"
image_size = 4
batch_size = 8

[model]
name = "tiny-deq"

[deq]
solver = "anderson"

[recipe]
lr = 0.001
steps = 4

[matrix]
"deq.gradient" = ["ift"]
"""


@pytest.fixture
def toys():
    registry = plugins.reset_registry(("train-toys", TrainToys()))
    yield registry
    plugins.reset_registry()


@dataclass
class _Spec:
    data: dict[str, Any]

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        assert mode == "json"
        return json.loads(json.dumps(self.data))


@dataclass
class _Suite:
    """A stand-in with what `suite_record` reads."""

    spec: _Spec


def _solve_suite(**problem: Any) -> _Suite:
    first = {"name": "a", "cell": "tanh", "batch_size": 4, **problem}
    return _Suite(_Spec({"suite": {"name": "s"}, "problems": [first, {"name": "b"}]}))


def _write_meta(writer: ReportWriter, suite: Any, settings: dict[str, Any], **extra: Any) -> None:
    writer.write_meta({"suite": "tiny", "deqbench": __version__, **suite_record(suite, settings)})
    if extra:
        meta = json.loads(writer.meta.read_text())
        writer.meta.write_text(json.dumps({**meta, **extra}))


def _train_row(run: int, status: str, **cells: Any) -> dict[str, Any]:
    return {"run": run, "suite": "tiny", "kind": "train", "status": status, **cells}


def _steps(run: int, n: int, loss: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"run": run, "step": s, "mode": "equilibrium", "loss": loss / (s + 1)} for s in range(n)
    ]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_train_report_keeps_final_rows_and_drops_interrupted(toys, tmp_path):
    suite = load_suite(_suite_file(tmp_path))
    settings = {"max_steps": 3, "only": (), "limit": None}
    writer = ReportWriter(tmp_path / "r.csv", TRAIN_KIND)
    _write_meta(writer, suite, settings)
    opts = {"options": json.dumps({"deq.gradient": "ift", "a,b": 1}), "error": ""}
    writer.append(
        _train_row(0, "completed", **opts, train_loss_final=0.1), {"steps.csv": _steps(0, 2)}
    )
    writer.append(_train_row(1, "interrupted", error="Ctrl-C"), {"steps.csv": _steps(1, 3)})
    writer.append(
        _train_row(2, "diverged", error="loss is nan\nat step 1"), {"steps.csv": _steps(2, 1)}
    )
    writer.append(_train_row(3, "interrupted"), {"steps.csv": _steps(3, 1)})
    writer.append(_train_row(3, "error", error="boom"), {"steps.csv": _steps(3, 2, loss=2.0)})
    writer.append(_train_row(4, "interrupted"))
    report_before, steps_before = (
        writer.path.read_text(),
        companion(writer.path, "steps.csv").read_text(),
    )
    # a row of run 5 is being appended when the suite is SIGKILLed: the line is cut short
    with writer.path.open("a") as fh:
        fh.write("5,tiny,train,,,blobs")

    plan = plan_resume(writer.path, suite, {"limit": None, "max_steps": 3})

    assert plan == ResumePlan(frozenset({0, 2, 3}), frozenset({1, 4}), writer.path)
    header = report_before.splitlines(keepends=True)[0]
    records = _records(report_before)  # the error with a newline makes one record two lines
    assert len(records) == 6
    assert writer.path.read_text() == header + records[0] + records[2] + records[4]
    assert '"{""deq.gradient"": ""ift"", ""a,b"": 1}"' in writer.path.read_text()
    step_lines = steps_before.splitlines(keepends=True)
    # run 0: lines 1-2, run 1: 3-5, run 2: 6, run 3's interrupted attempt: 7, its error: 8-9
    assert companion(writer.path, "steps.csv").read_text() == "".join(
        step_lines[0:3] + step_lines[6:7] + step_lines[8:]
    )
    assert (
        "2.0" in _lines(companion(writer.path, "steps.csv"))[4]
    )  # run 3's steps are those of its kept (error) row
    assert (
        not companion(writer.path, "traces.csv").exists()
        or companion(writer.path, "traces.csv").read_text().count("\n") <= 1
    )

    again = plan_resume(writer.path, suite, {"max_steps": 3})  # resuming twice changes nothing
    assert again.finished == plan.finished and again.redo == frozenset()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _records(text: str) -> list[str]:
    """The CSV's data records as written (a quoted cell may span lines)."""
    records, current = [], ""
    for line in text.splitlines(keepends=True)[1:]:
        current += line
        if current.count('"') % 2 == 0:
            records.append(current)
            current = ""
    return records


def test_solve_report_and_traces(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "solve.csv", SOLVE)
    _write_meta(writer, suite, {"shard": Shard(1, 2)})

    def traces(run: int, n: int) -> list[dict[str, Any]]:
        return [{"run": run, "step": k, "abs_residual_max": 0.5**k} for k in range(n)]

    writer.append(
        {"run": 0, "status": "converged", "nfe": 7, "tol": 1e-05}, {"traces.csv": traces(0, 3)}
    )
    writer.append({"run": 2, "status": "max_iter", "nfe": 30}, {"traces.csv": traces(2, 2)})
    writer.append(
        {"run": 4, "status": "interrupted", "error": "Ctrl-C"}, {"traces.csv": traces(4, 2)}
    )
    writer.append({"run": 6, "status": "oom", "error": "CUDA out of memory"})
    before = writer.path.read_text().splitlines(keepends=True)
    trace_before = companion(writer.path, "traces.csv").read_text().splitlines(keepends=True)

    plan = plan_resume(writer.path, suite, {"shard": Shard(1, 2), "only": None})

    assert plan.finished == {0, 2, 6} and plan.redo == {4}
    assert writer.path.read_text() == "".join(before[:3] + before[4:])
    assert companion(writer.path, "traces.csv").read_text() == "".join(trace_before[:6])
    assert "1e-05" in before[1] and "1e-05" in writer.path.read_text()  # not reformatted
    assert not companion(writer.path, "steps.csv").exists()


def test_nothing_to_redo_leaves_the_files_untouched(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "s.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.append({"run": 0, "status": "error", "error": "x"})
    stamp = writer.path.stat().st_mtime_ns
    assert plan_resume(writer.path, suite, {}).finished == {0}
    assert writer.path.stat().st_mtime_ns == stamp


def test_an_empty_report_has_nothing_finished(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "s.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.path.write_text("")  # killed before its first row
    plan = plan_resume(writer.path, suite, {})
    assert plan.finished == frozenset() and plan.redo == frozenset()


def test_changed_train_suite_is_refused_naming_the_keys(toys, tmp_path):
    path = _suite_file(tmp_path)
    writer = ReportWriter(tmp_path / "x.csv", TRAIN_KIND)
    _write_meta(writer, load_suite(path), {"max_steps": 3})
    writer.append(_train_row(0, "completed"))
    before = writer.path.read_text()
    path.write_text(
        textwrap.dedent(TRAIN)
        .replace("lr = 0.001", "lr = 0.002")
        .replace('= ["ift"]', '= ["ift", "jfb"]')
    )
    changed = load_suite(path)
    with pytest.raises(ConfigError) as info:
        plan_resume(writer.path, changed, {"max_steps": 5})
    message = str(info.value)
    assert message.startswith(f"--resume {writer.path}: the suite changed since the report ")
    assert "--max-steps 3 → 5" in message
    assert "recipe.lr 0.001 → 0.002" in message
    assert """matrix."deq.gradient" ['ift'] → ['ift', 'jfb']""" in message
    assert "\n" not in message
    assert writer.path.read_text() == before  # nothing rewritten on refusal


def _suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent(TRAIN))
    return path


def test_changed_version_settings_and_problem_list(tmp_path):
    writer = ReportWriter(tmp_path / "x.csv", SOLVE)
    _write_meta(writer, _solve_suite(), {"limit": 2}, deqbench="0.0.1")
    writer.append({"run": 0, "status": "converged"})
    with pytest.raises(ConfigError) as info:
        plan_resume(writer.path, _solve_suite(batch_size=8), {"only": ("a",)})
    message = str(info.value)
    assert f"deqbench 0.0.1 → {__version__}" in message
    assert "--limit 2 → (unset)" in message and "--only (unset) → ['a']" in message
    assert "problems[0].batch_size 4 → 8" in message


def test_many_changes_are_cut_short(tmp_path):
    old = _Suite(_Spec({"t": {f"k{i}": i for i in range(8)}}))
    new = _Suite(_Spec({"t": {f"k{i}": i + 1 for i in range(8)}}))
    writer = ReportWriter(tmp_path / "x.csv", SOLVE)
    _write_meta(writer, old, {})
    writer.append({"run": 0, "status": "converged"})
    with pytest.raises(ConfigError, match=r"t\.k4 4 → 5; and 3 more \(") as info:
        plan_resume(writer.path, new, {})
    assert "t.k5" not in str(info.value)


def test_unchanged_suite_and_a_spec_key_added_or_removed(tmp_path):
    writer = ReportWriter(tmp_path / "x.csv", SOLVE)
    _write_meta(writer, _Suite(_Spec({"a": {"b": 1}})), {})
    writer.append({"run": 0, "status": "converged"})
    plan_resume(writer.path, _Suite(_Spec({"a": {"b": 1}})), {})
    with pytest.raises(ConfigError, match=r"a\.c \(unset\) → 2$|a\.c \(unset\) → 2 \("):
        plan_resume(writer.path, _Suite(_Spec({"a": {"b": 1, "c": 2}})), {})
    with pytest.raises(ConfigError, match=r"a\.b 1 → 1\.0"):  # a type change is a change
        plan_resume(writer.path, _Suite(_Spec({"a": {"b": 1.0}})), {})


def test_suite_record_matches_the_fingerprint(tmp_path):
    suite = _solve_suite()
    settings = {"shard": Shard(2, 4), "only": ("a", "b"), "limit": None, "max_steps": 0}
    record = suite_record(suite, settings)
    assert record == {
        "fingerprint": fingerprint(suite, settings),
        "spec": suite.spec.model_dump(mode="json"),
        "settings": {"max_steps": 0, "only": ["a", "b"], "shard": "2/4"},
    }
    json.dumps(record)  # ready for meta.json as it is


def test_missing_report_meta_or_record(tmp_path):
    suite = _solve_suite()
    report = tmp_path / "gone.csv"
    with pytest.raises(ConfigError, match=rf"^--resume {report}: no such report$"):
        plan_resume(report, suite, {})
    report.write_text("run,status\n0,converged\n")
    with pytest.raises(ConfigError, match=r"has no gone\.meta\.json, so it cannot be resumed$"):
        plan_resume(report, suite, {})
    meta = companion(report, "meta.json")
    meta.write_text("{not json")
    with pytest.raises(ConfigError, match=r"gone\.meta\.json is not valid JSON"):
        plan_resume(report, suite, {})
    meta.write_text(json.dumps({"suite": "s", "deqbench": __version__}))
    with pytest.raises(ConfigError, match="records no suite spec"):
        plan_resume(report, suite, {})


def test_a_report_without_run_or_status_columns(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "x.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="has no run column"):
        plan_resume(writer.path, suite, {})
    writer.path.write_text("run,status\nfirst,converged\n")
    with pytest.raises(ConfigError, match=r"x\.csv: run 'first' is not a run index"):
        plan_resume(writer.path, suite, {})


def test_a_torn_last_line_alone_is_cut(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "s.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.append({"run": 0, "status": "converged"}, {"traces.csv": [{"run": 0, "step": 0}]})
    report, traces = writer.path.read_text(), companion(writer.path, "traces.csv").read_text()
    with writer.path.open("a") as fh:
        fh.write("1,tin")
    with companion(writer.path, "traces.csv").open("a") as fh:
        fh.write("1,0,0.")
    assert plan_resume(writer.path, suite, {}).finished == {0}
    assert (
        writer.path.read_text() == report
        and companion(writer.path, "traces.csv").read_text() == traces
    )


def test_attempt_blocks_that_do_not_line_up_are_all_kept(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "s.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.append({"run": 0, "status": "error", "error": "before any step"})  # wrote no traces
    writer.append(
        {"run": 0, "status": "converged"}, {"traces.csv": [{"run": 0, "step": k} for k in range(3)]}
    )
    traces = companion(writer.path, "traces.csv").read_text()
    assert plan_resume(writer.path, suite, {}).finished == {0}
    assert (
        companion(writer.path, "traces.csv").read_text() == traces
    )  # one block, two rows: nothing guessed away
    lines = writer.path.read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("0,") and ",converged," in lines[1]


def test_a_report_killed_before_its_header_resumes_from_its_meta(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "s.csv", SOLVE)
    _write_meta(writer, suite, {})
    writer.path.unlink()  # killed between the meta.json and the report's header
    plan = plan_resume(writer.path, suite, {})
    assert plan.finished == frozenset() and plan.redo == frozenset()
    writer.meta.unlink()  # neither: nothing to resume
    with pytest.raises(ConfigError, match="no such report"):
        plan_resume(writer.path, suite, {})


def test_a_report_with_another_versions_columns_is_refused(tmp_path):
    suite = _solve_suite()
    writer = ReportWriter(tmp_path / "old.csv", SOLVE)
    _write_meta(writer, suite, {})
    old = [c for c in SOLVE.columns if c != "smoke"] + ["retired"]
    writer.path.write_text(",".join(old) + "\n")
    with pytest.raises(ConfigError) as info:
        plan_resume(writer.path, suite, {}, columns=SOLVE.columns)
    assert str(info.value) == (
        f"--resume {writer.path}: its columns are not the ones this deqbench writes (this "
        "deqbench adds smoke; it has retired, which this deqbench does not write); it was "
        "written by another version of deqbench: start a new report"
    )
