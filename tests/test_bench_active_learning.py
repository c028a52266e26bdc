"""The active-learning benchmark runs end to end in its tiniest mode and writes what it promises
(the JSON rows RESULTS.md quotes and the figure). No number is asserted: a smoke run's mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_active_learning.py"


def test_smoke_run_writes_rounds_acceptance_cost_and_figure(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--workdir",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("*-active-learning-smoke.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema"] == "qupath-camseg active learning v1"
    assert Path(data["figure"]).is_file() and Path(data["figure"]).stat().st_size > 10_000
    for arm in ("suggest", "random"):
        (row,) = data["arms"][arm]
        assert row["boxes"] == 2 and row["annotated_mm2"] > data["round0"]["annotated_mm2"]
        assert 0 <= row["heldout_dice"] <= 1
        again = data["retrained"][arm]  # from scratch on the arm's final annotations, the full arm's steps
        assert again["annotated_mm2"] == row["annotated_mm2"] and again["steps"] == data["full"]["steps"]
        assert 0 <= again["heldout_dice"] <= 1
    assert data["full"]["annotated_mm2"] > data["arms"]["suggest"][0]["annotated_mm2"]
    assert "retrained_suggest_reaches_full_with_at_most_a_third" in data["acceptance"]
    assert set(data["acceptance"]) >= {"reaches_full_with_at_most_a_third", "suggest_beats_random_every_round",
                                       "suggest_beats_random_at_equal_area_every_round"}
    assert len(data["acceptance"]["suggest_minus_random_at_equal_area_per_round"]) == 1
    assert len(data["suggestion_cost"]) == 2
    for cost in data["suggestion_cost"].values():
        assert cost["seconds_suggest_0"] > 0 and cost["ratio"] > 0
