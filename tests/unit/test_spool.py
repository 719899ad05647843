"""A stage's tracking calls are journalled and delivered in the background; an unavailable store
(here a SQLite file whose folder is missing, then created) costs no waiting and loses nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tasks.config import TrackingConfig
from tasks.spool import Spool
from tasks.tracking import stage_run


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "spool"
    monkeypatch.setenv("R1FLOW_SPOOL_DIR", str(d))
    monkeypatch.delenv("R1FLOW_PARENT_RUN_ID", raising=False)
    return d


def _run(uri: str, experiment: str = "r1flow"):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    [run] = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    return c, run


def test_calls_arrive_in_order_and_the_journal_is_removed(tmp_path, spool_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "card.md").write_text("# card\n")
    with stage_run(TrackingConfig(uri=uri), "sft", {"lr": 0.1, "nested": {"k": 2}}) as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step)
        run.log_artifact(tmp_path / "card.md")
        run.set_tags({"resumed_from_step": 0})
        (tmp_path / "card.md").write_text("changed after logging\n")  # the logged copy is kept
    c, r = _run(uri)
    assert r.info.status == "FINISHED" and r.data.params == {"lr": "0.1", "nested.k": "2"}
    assert [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, "loss")] == [
        (s, 1.0 / (s + 1)) for s in range(5)
    ]
    assert (
        Path(c.download_artifacts(r.info.run_id, "card.md", str(tmp_path / "dl"))).read_text() == "# card\n"
    )
    assert r.data.tags["resumed_from_step"] == "0"
    assert not any(spool_dir.iterdir())  # delivered journals are deleted


def test_store_down_then_back_delivers_everything_during_the_run(tmp_path, spool_dir, capfd):
    store = tmp_path / "later"
    store.write_text("")  # a file where the store's folder should be: every call fails, the store is "down"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    t0 = time.perf_counter()
    with stage_run(TrackingConfig(uri=uri), "grpo") as run:
        for step in range(50):
            run.log_metrics({"reward": step / 10}, step)
        logged_s = time.perf_counter() - t0
        time.sleep(1.5)  # the thread has failed at least once by now
        assert run.spool.delivered == 0
        store.unlink()  # the store is back
        store.mkdir()
    err = capfd.readouterr().err
    assert "unreachable" in err and "training continues" in err and "is back" in err
    c, r = _run(uri)
    assert r.info.status == "FINISHED"
    assert [m.value for m in c.get_metric_history(r.info.run_id, "reward")] == [s / 10 for s in range(50)]
    assert logged_s < 1.0  # 50 calls while down: the training thread never waited on the store


def test_what_is_left_at_the_end_is_kept_and_flush_delivers_it(tmp_path, spool_dir, capfd, monkeypatch):
    monkeypatch.setenv("R1FLOW_TRACKING_FLUSH_S", "1")
    store = tmp_path / "later"
    store.write_text("")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with stage_run(TrackingConfig(uri=uri), "sft") as run:
        for step in range(3):
            run.log_metrics({"loss": float(step)}, step)
    assert "not delivered" in capfd.readouterr().err
    [journal] = list(spool_dir.iterdir())
    kinds = [
        json.loads(line)["op"]["kind"]
        for line in (journal / "journal.jsonl").read_text().splitlines()
        if "op" in json.loads(line)
    ]
    assert kinds == ["create", "batch", "batch", "batch", "terminate"]

    store.unlink()
    store.mkdir()
    assert Spool.replay(journal) == 0
    c, r = _run(uri)
    assert r.info.status == "FINISHED" and r.data.tags["r1flow.stage"] == "sft"
    assert [m.value for m in c.get_metric_history(r.info.run_id, "loss")] == [0.0, 1.0, 2.0]
    assert not journal.exists()
