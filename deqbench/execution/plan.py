"""From a ``deqbench run`` command line to what runs: the suite loaded, its smoke options, its
share, its resume plan, its device and processes, and its report path.

Everything here is decided before anything runs, so every mistake in the command line is one
`ConfigError` line, and a resumed report is checked before a byte of it is rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from deqbench.errors import ConfigError
from deqbench.execution import distributed
from deqbench.execution.device import resolve_device
from deqbench.execution.distributed import SINGLE, Dist
from deqbench.execution.resume import ResumePlan, plan_resume, suite_record
from deqbench.execution.shard import parse_shard, share_meta, take_share
from deqbench.plugins import get_registry, get_run_kind
from deqbench.report.results import check_out
from deqbench.runs.kind import RunKind
from deqbench.suite.load import load_suite


@dataclass(frozen=True)
class Request:
    """What ``deqbench run`` was asked to do, as given on the command line."""

    suite_file: Path
    overrides: tuple[str, ...] = ()
    out: Path | None = None
    device: str | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)  #: flag ("--limit") → value or None
    shard: str | None = None
    resume: Path | None = None
    nproc: int | None = None


@dataclass
class Plan:
    """A suite ready to run: `deqbench.execution.runner.run_suite`'s arguments, and what to
    tell the user first."""

    suite: Any
    kind: RunKind
    out: Path
    device: torch.device
    dist: Dist = SINGLE
    meta: dict[str, Any] = field(default_factory=dict)
    resume: ResumePlan | None = None
    notes: list[str] = field(default_factory=list)  #: lines to print before the runs
    warnings: list[str] = field(default_factory=list)

    @property
    def todo(self) -> int:
        """Runs left to run (a resumed report has some already)."""
        return len(self.suite.runs) - (len(self.resume.finished) if self.resume else 0)


def relaunch_code(request: Request) -> int | None:
    """With ``--nproc N`` outside torchrun: the exit code of the same command run under
    ``torchrun --nproc_per_node=N`` (`deqbench.execution.distributed.relaunch`); else None.
    A suite whose kind's runs cannot span processes is refused first."""
    if not request.nproc or distributed.from_env().enabled:
        return None
    suite = load_suite(request.suite_file, request.overrides)
    kind = get_run_kind(suite.kind)
    _check_smoke(request, kind)
    if not kind.distributed:
        titles = [k.obj.title for k in get_registry().entries(["run_kinds"]) if k.obj.distributed]
        raise ConfigError(f"{request.suite_file}: --nproc applies to {' and '.join(titles)} suites")
    return distributed.relaunch(request.nproc)


def plan_run(request: Request) -> Plan:
    """Load and check everything ``request`` names, in the order that keeps a mistake from
    touching any file: the suite, the smoke options, ``--out``/``--resume``, the resume plan
    (rank 0 rewrites the resumed report), then the smoke run, the share, the device and the
    process group, and the report path."""
    share = parse_shard(request.shard) if request.shard else None
    suite = load_suite(request.suite_file, request.overrides)
    kind = get_run_kind(suite.kind)
    _check_smoke(request, kind)
    out = request.out
    if request.resume is not None:
        if out is not None and out.resolve() != request.resume.resolve():
            raise ConfigError(f"--out {out} with --resume {request.resume}: give one of them")
        out = request.resume
    elif out is not None:
        check_out(out)
    smoke = {kind.smoke_options[flag]: value for flag, value in request.smoke.items() if value}
    settings = {  # every smoke option, as `deqbench.execution.resume` records them
        name: tuple(sorted(value)) if isinstance(value, (tuple, list)) else value
        for name, value in (
            (kind.smoke_options[f], request.smoke.get(f)) for f in kind.smoke_options
        )
    }
    record = suite_record(suite, settings)
    resume = None
    if request.resume is not None:
        rank0 = distributed.from_env().is_main
        resume = plan_resume(
            request.resume, suite, settings, shard=share, rewrite=rank0, columns=kind.columns
        )
    if smoke:
        suite = kind.smoke(suite, **smoke)
    plan = Plan(suite, kind, Path(), torch.device("cpu"), meta=dict(record), resume=resume)
    plan.warnings += list(suite.warnings)
    if share is not None:
        out = _take_share(plan, share, record, out)
    plan.device = resolve_device(request.device or suite.spec.suite.device)
    if kind.distributed:
        plan.dist = distributed.init(plan.device)
        plan.device = distributed.rank_device(plan.device, plan.dist)
    if out is None:
        out = distributed.from_main(_stamped(suite.name, ""), plan.dist)
        if plan.dist.is_main:
            check_out(out)
    plan.out = out
    if resume is not None:
        plan.notes.append(f"resuming {out}: {len(resume.finished)} finished runs kept")
    return plan


def _stamped(name: str, suffix: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"{name}-{stamp}{suffix}.csv"


def _check_smoke(request: Request, kind: RunKind) -> None:
    """Refuse another kind's smoke options: ignored, they would let a full suite run where a
    smoke run was asked for. Checked before ``--resume`` rewrites anything."""
    wrong = [
        flag for flag, value in request.smoke.items() if value and flag not in kind.smoke_options
    ]
    if not wrong:
        return
    others = [e.obj for e in get_registry().entries(["run_kinds"]) if e.obj.name != kind.name]
    owner = next((k for k in others if wrong[0] in k.smoke_options), None)
    verb = "applies" if len(wrong) == 1 else "apply"
    to = f" to {owner.title} suites" if owner is not None else ""
    takes = " and ".join(kind.smoke_options) or "no smoke options"
    raise ConfigError(
        f"{request.suite_file}: {' and '.join(wrong)} {verb}{to}; a {kind.title} suite takes "
        f"{takes}"
    )


def _take_share(plan: Plan, share: Any, record: Mapping[str, Any], out: Path | None) -> Path:
    """Keep only the runs of ``share`` in ``plan``, with its ``meta.json`` keys; returns its
    report path, by default ``reports/<suite>-<time>-shard-I-of-N.csv``."""
    suite = plan.suite
    plan.meta.update(share_meta(suite, share, record["fingerprint"]))
    out = out or check_out(_stamped(suite.name, share.suffix))
    part = take_share(suite, share)
    plan.notes.append(
        f"share {share} of suite [bold]{suite.name}[/]: {len(part.runs)} of its "
        f"{len(suite.runs)} runs"
    )
    if not part.runs and not out.exists():  # N above the run count: still a report to merge
        plan.warnings.append(f"share {share} holds none of the suite's runs")
        out.write_text(",".join(plan.kind.columns) + "\n", encoding="utf-8")
    plan.suite = part
    return out
