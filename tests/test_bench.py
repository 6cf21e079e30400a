"""scripts/bench.py runs end to end at tiny sizes and writes its figures and its timeline.

Nothing here is timed: the figures depend on the machine; only their presence is checked.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_writes_every_figure_and_the_timeline(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the `bench` dependency group is not installed")
    if not (Path(sys.executable).parent / "target-csv").exists() and not shutil.which("target-csv"):
        pytest.skip("target-csv (the `bench` dependency group) is not installed")
    bench = _bench()
    tiny = bench.Sizes(
        throughput=300,
        stages=300,
        slots=12_000,
        slot_rows_per_minute=6_000_000,
        memory=300,
        duplicates=500,
        changes=200,
        rerun=300,
        repeats=1,
        stores=200,
        tap=300,
        large_reruns=(300,),
        states=300,
        events=10,
        event_users=300,
        waiting=300,
    )
    bench.run(list(bench.NAMES), tiny, tmp_path)

    results = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "git", "sizes", "table", *bench.NAMES} <= results.keys()
    for shape in ("flat", "nested"):
        throughput = results["throughput"][shape]
        for who in ("userpilot", "csv"):
            for label in ("default", "no_validation"):
                assert throughput[f"{who}_{label}"]["records_per_second"] > 0
        assert throughput["ratio_default"] > 0
        assert throughput["ratio_no_validation"] > 0
    common = {"read JSON", "validate, parse dates", "key check", "record to profile"}
    common |= {"profile to line", "message loop and glue"}
    for label, last in (
        ("flat", "batch files"),
        ("nested", "batch files"),
        ("unchanged_rerun", "change lookup"),
    ):
        stages = results["stages"][label]
        assert stages["records_per_cpu_second"] > 0
        assert stages["shares"].keys() == common | {last}
    slots = results["slots"]
    assert slots["jobs"] == 2
    assert {"utilization", "max_gap_seconds", "mean_gap_seconds", "polls_per_job"} <= slots.keys()
    assert len(slots["target_idle_seconds"]) == 1
    assert 0 <= slots["target_idle_share"] <= slots["slot_idle_share"] < 1
    assert results["memory"]["peak_rss_mb"] > 0
    for emulator in ("instant", "paced"):
        assert 0 < results["duplicates"][emulator]["sent_per_received"] <= 1
        assert results["tap"][emulator]["held_seconds"] > 0
    assert "held_over_instant" in results["tap"]
    assert results["states"]["peak_rss_mb"] > 0
    assert results["large_reruns"]["sqlite_300"]["unchanged"]["rows_sent"] == 0
    assert results["events"]["accepted"] == 10
    assert results["events"]["events_per_minute"] > 0
    changes = results["changes"]
    assert changes["first"]["rows_sent"] == 200
    assert changes["same_again"]["rows_sent"] == 0
    assert changes["one_percent"]["rows_sent"] == 2
    stores = results["stores"]
    if "skipped" not in stores:  # measured wherever a PostgreSQL server is at hand (CI)
        assert stores["first"]["rows_sent"] == 200
        assert stores["unchanged"]["rows_sent"] == 0
    rerun = results["rerun"]
    assert rerun["first"]["rows_sent"] == 300
    assert rerun["unchanged"]["rows_sent"] == 0
    assert rerun["unchanged"]["peak_rss_mb"] > 0
    # Every goal is reported with its figure, met or not (the large reruns': at their sizes).
    goals = {goal["goal"]: goal for goal in results["goals"]}
    assert goals.keys() == {goal.name for goal in bench.GOALS if goal.path[0] != "large_reruns"}
    assert all(isinstance(goal["met"], bool) for goal in goals.values())
    png = tmp_path / "slot-timeline.png"
    assert png.read_bytes().startswith(b"\x89PNG")
