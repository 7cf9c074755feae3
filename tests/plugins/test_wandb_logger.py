"""The ``wandb`` logger plugin, offline: a 3-step digits training writes its config, its step
losses and evaluation, and its row as summary into the offline run's transaction log, which the
test reads back record by record (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deqbench import plugins
from deqbench.cli import main
from deqbench.testing.loggers import smoke_report, smoke_suite
from deqbench.testing.train_toys import TrainToys
from deqbench_plugins.wandb_logger import WandbLogger

wandb = pytest.importorskip("wandb")


@pytest.fixture
def toys():
    plugins.reset_registry(("train-toys", TrainToys()))
    yield
    plugins.reset_registry()
    wandb.teardown()  # the W&B service process this test started


def read_log(path: Path) -> list:
    """The records of a ``.wandb`` transaction log: a 7-byte header, then LevelDB-log framed
    chunks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) in
    32 KiB blocks, each record a ``wandb_internal_pb2.Record``. wandb no longer ships a reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, parts, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_an_offline_run_records_steps_eval_config_and_row(toys, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    suite = smoke_suite(tmp_path, ["wandb"], {"wandb": {"project": "deq", "tags": ["smoke"]}})
    out = tmp_path / "r.csv"
    result = cli.invoke(main, ["run", str(suite), "--out", str(out), "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    row, steps = smoke_report(out)
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = read_log(log)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name, run.run_group) == ("deq", "run-000-tiny-deq", "logged")
    assert list(run.tags) == ["smoke"]
    config = _items(run.config.update)
    assert config["dataset"]["name"] == "digits" and config["run"]["max_steps"] == 3
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    trained = [h for h in history if "train/loss" in h]
    assert [h["_step"] for h in trained] == [s["step"] for s in steps] == [0, 1, 2]
    assert [h["train/loss"] for h in trained] == pytest.approx([s["loss"] for s in steps])
    assert [h["train/f_nfe"] for h in trained] == [s["f_nfe"] for s in steps]
    (evaluated,) = [h for h in history if "eval/top1" in h]
    assert evaluated["_step"] == 3 and evaluated["eval/top1"] == pytest.approx(row["eval_top1"])
    summary: dict = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["status"] == "completed" and summary["steps_done"] == 3
    assert summary["eval_top1"] == pytest.approx(row["eval_top1"])
    (end,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert end.exit_code == 0


def test_options_are_checked_when_built():
    with pytest.raises(ValueError, match="mode must be one of"):
        WandbLogger(mode="sometimes")
    with pytest.raises(ValueError, match="tags must be a list of strings"):
        WandbLogger(tags="smoke")
