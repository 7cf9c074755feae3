"""`deqbench report --html`: the page parses, holds every run, every plot drawn, failed rows
with their error, the reproduced marks, the traces, the environment and a compare section;
nothing points outside the file; a real browser loads it and sorts its table."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from deqbench.cli import main
from deqbench.report import compare_render
from deqbench.report.compare import compare
from deqbench.report.html import flatten, render, write_html
from deqbench.report.matching import load_report
from deqbench.report.plot import plot_report
from deqbench.report.traces import TRACE_COLUMNS
from deqbench.runs.train.columns import TRAIN_COLUMNS

ERROR = "RuntimeError: <script>alert(1)</script> out of budget"
#: run → (solver, gradient, status, top-1, reproduced)
RUNS = {
    0: ("anderson", "ift", "completed", 91.5, "yes"),
    1: ("broyden", "ift", "completed", 88.0, "no"),
    2: ("fixed-point", "jfb", "completed", 95.25, "n/a"),
    3: ("anderson", "phantom", "error", None, "n/a"),
}
META = {"python": "3.11.2", "cuda": None, "plugins": {"mdeq": "0.1.0", "nested": {"x": 1}}}


def _report(
    folder: Path, top1_shift: float = 0.0, meta: dict | None = META, figures: bool = False
) -> Path:
    """A training report of `RUNS` with their ``reproduced`` verdicts (and the reference
    figures behind them when ``figures``), its traces and meta."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for run, (solver, gradient, status, top1, reproduced) in RUNS.items():
        row = dict.fromkeys(TRAIN_COLUMNS)
        row.update(run=run, suite="t", kind="train", model="mdeq-cpu-small", dataset="digits")
        row.update(image_size=32, batch_size=8, solver=solver, gradient=gradient, seed=0)
        row.update(solver_options="{}", gradient_options="{}", model_options="{}", options="{}")
        row.update(status=status, f_max_iter=8, f_tol=1e-3, precision="fp32", device="cpu")
        if status == "completed":
            row.update(eval_top1=top1 + top1_shift, step_ms_median=10.0 + run, saved_mb=3.0)
        else:
            row["error"] = ERROR
        if figures and reproduced != "n/a":
            row.update(reference_metric="eval_top1", reference_value=91.0, reference_band=1.0)
        rows.append({**row, "reproduced": reproduced})
    path = folder / "report.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    traces = [
        {"run": r, "step": k, "rel_residual_median": 10.0**-k, "rel_residual_max": 2 * 10.0**-k}
        for r in (0, 1, 2)
        for k in range(3)
    ]
    pd.DataFrame(traces, columns=list(TRACE_COLUMNS)).to_csv(
        folder / "report.traces.csv", index=False
    )
    if meta is not None:
        (folder / "report.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path


class _Page(HTMLParser):
    """Tables (by their class) as rows of (row class, cell texts, cell classes), every
    ``src``/``href``, and the ids of sections."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[str, list]] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.text = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[a] for a in ("src", "href") if a in attrs]
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "table":
            self.tables.append((attrs.get("class") or "", []))
        elif tag == "tr":
            self.tables[-1][1].append((attrs.get("class") or "", [], []))
        elif tag in ("td", "th"):
            self._cell = []
            self.tables[-1][1][-1][2].append(attrs.get("class") or "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text += data
        if self._cell is not None:
            self._cell.append(data)

    def table(self, cls: str, index: int = 0) -> list:
        return [rows for c, rows in self.tables if cls in c.split()][index]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


@pytest.mark.parametrize("figures", [False, True])
def test_page_holds_every_run_failure_reproduced_and_trace(tmp_path, figures):
    """With reference figures the kind's table has the reproduced column; without, the page
    adds it: either way one column, marked and coloured alike."""
    text, page = render(_report(tmp_path, figures=figures))
    parsed = _parse(text)
    header, *body = parsed.table("summary")
    cols = header[1]
    assert cols[0] == "run" and cols[-1] == "error" and cols.count("reproduced") == 1
    mark = cols.index("reproduced")
    assert [r[1][0] for r in body] == ["0", "1", "2", "3"]  # every run, in report order
    assert [r[1][cols.index("solver")] for r in body] == [v[0] for v in RUNS.values()]
    assert [r[1][cols.index("top-1 %")] for r in body] == ["91.5", "88", "95.2", "–"]
    assert [r[0] for r in body] == ["", "", "", "failed"]  # the error row, and it alone
    assert [r[1][mark] for r in body] == ["yes ✓", "no ✗", "n/a", "n/a"]
    assert [r[2][mark] for r in body] == ["good", "bad", "", ""]
    assert body[3][1][-1] == ERROR and body[3][2][-1] == "bad"  # shown whole, as text
    assert "<script>alert(1)" not in text  # autoescaped
    traces = parsed.table("traces")
    assert [r[1][0] for r in traces[1:]] == ["0", "1", "2"]
    assert traces[1][1][2:6] == ["3", "1.00e-02", "2.00e-02", "–"]
    assert traces[1][1][6] == "1.00e+00 1.00e-01 1.00e-02"
    env = dict(r[1] for r in parsed.table("env")[1:])
    assert env == {"python": "3.11.2", "cuda": "null", "plugins.mdeq": "0.1.0",
                   "plugins.nested.x": "1"}  # fmt: skip
    assert page.runs == 4 and "compare" not in parsed.ids


def test_every_plot_drawn_is_embedded_and_nothing_is_external(tmp_path):
    path = _report(tmp_path)
    drawn = [d for d in plot_report(path, tmp_path / "plots") if d.path is not None]
    text, page = render(path)
    parsed = _parse(text)
    images = [link for link in parsed.links if link.startswith("data:image/png;base64,")]
    assert len(drawn) == page.plots == len(images) >= 2  # accuracy, memory, convergence…
    alts = {d.name for d in drawn}
    assert all(f'alt="{name}"' in text for name in alts)
    assert not [link for link in parsed.links if link.startswith(("http:", "https:", "//"))]
    assert [link for link in parsed.links if link.startswith("#")]  # the page's own anchors


def test_compare_section_renders_the_comparison(tmp_path):
    a, b = _report(tmp_path / "a"), _report(tmp_path / "b", top1_shift=-5.0)
    text, _ = render(a, b)
    parsed = _parse(text)
    assert "compare" in parsed.ids
    header, *body = parsed.table("compare")
    cmp = compare(load_report(a), load_report(b), names=(str(a), str(b)))
    expected_headers, expected = compare_render.rows(cmp)
    assert header[1] == expected_headers
    assert [r[1] for r in body] == [[t for t, _ in cells] for cells in expected]
    top1 = header[1].index("top-1 Δpt")
    marked = [r[1][top1] for r in body if r[2][top1] == "bad"]
    assert marked == ["-5.00 ✗"] * 3  # the three completed runs each lost 5 points
    assert compare_render.summary(cmp) in parsed.text
    assert "3 got worse" in compare_render.summary(cmp)


def test_compare_with_no_run_in_common_is_refused(cli, tmp_path):
    a, b = _report(tmp_path / "a"), _report(tmp_path / "b")
    pd.read_csv(b).assign(seed=1).to_csv(b, index=False)
    result = cli.invoke(main, ["report", str(a), "--compare", str(b)])
    assert result.exit_code == 2, result.output
    assert "have no runs in common (4 runs only in" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flatten_nested_meta():
    meta = {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}, "f": None, "g": "x"}
    assert flatten(meta) == [("a.b.c", "1"), ("a.d", "[1, 2]"), ("e", "{}"), ("f", "null"),
                             ("g", "x")]  # fmt: skip


def test_missing_companions_are_noted_not_fatal(tmp_path):
    path = _report(tmp_path, meta=None)
    (tmp_path / "report.traces.csv").unlink()
    text, _ = render(path)
    assert "report.meta.json is not beside the report" in text
    assert "report.traces.csv is not beside the report" in text


def test_cli_writes_the_page(cli, tmp_path):
    path = _report(tmp_path)
    out = tmp_path / "site" / "r.html"
    result = cli.invoke(main, ["report", str(path), "--html", str(out), "--compare", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out} (4 runs, ")
    assert "compare" in _parse(out.read_text(encoding="utf-8")).ids


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such report file"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not a deqbench report"),
        (lambda p: p.write_text("a,b\n1,2\n"), "not a deqbench report"),
    ],
)
def test_cli_errors_are_one_line_exit_2(cli, tmp_path, make, message):
    path = tmp_path / "x.csv"
    make(path)
    result = cli.invoke(main, ["report", str(path), "--html", str(tmp_path / "x.html")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_html_path_that_is_a_folder_is_refused(tmp_path):
    from deqbench.errors import ConfigError

    with pytest.raises(ConfigError, match="is a folder"):
        write_html(_report(tmp_path), tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_a_browser_loads_the_page_and_sorts_by_a_header(tmp_path):
    out = write_html(_report(tmp_path), tmp_path / "r.html").path
    # A click on "top-1 %", twice: descending; the failed run's blank stays last.
    html = out.read_text(encoding="utf-8")
    click = "<script>var h=[...document.querySelectorAll('table.summary th')]"
    click += ".find(t=>t.textContent==='top-1 %');h.click();h.click();</script></body>"
    out.write_text(html.replace("</body>", click), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", out.as_uri()],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    header, *body = _parse(dom).table("summary")
    assert header[1][header[1].index("top-1 %")] == "top-1 %"
    assert [r[1][0] for r in body] == ["2", "0", "1", "3"]  # 95.2, 91.5, 88, –
