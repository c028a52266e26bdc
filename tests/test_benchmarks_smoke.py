"""The benchmark suite's entry point runs end to end in its tiniest mode and writes the JSON it
promises (issue 8). No timing is asserted: the numbers of a smoke run mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(out), "--workdir", str(out / "work")],
                          capture_output=True, text=True, timeout=300, check=False)
    files = sorted(out.glob("*-smoke.json"))
    assert len(files) == 1, f"expected one JSON file in {out}: {list(out.iterdir())}\n{proc.stderr[-2000:]}"
    return proc, json.loads(files[0].read_text(encoding="utf-8")), files[0]


def test_smoke_run_succeeds_and_prints_the_table(smoke):
    proc, data, path = smoke
    errors = {k: v["error"] for k, v in data["sections"].items() if v.get("error")}
    assert proc.returncode == 0 and not errors, f"{errors}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert "section" in proc.stdout and "figure of merit" in proc.stdout
    for name in ("pipeline", "predict", "memory", "train", "read"):
        assert f"\n{name} " in proc.stdout, f"no {name} row in the table:\n{proc.stdout}"
    assert str(path) in proc.stdout
    assert path.with_suffix(".log").is_file()


def test_smoke_json_has_the_promised_keys(smoke):
    _, data, path = smoke
    assert data["schema"] == "qupath-camseg benchmarks v1"
    assert data["mode"] == "smoke" and data["device"] == "cpu"
    assert path.name.startswith(data["date"][:10]) and data["machine"]["slug"] in path.name
    assert {"cpu", "cpus", "python", "torch", "git"} <= set(data["machine"])
    assert isinstance(data["load_avg_1min_start"], float) and isinstance(data["table"], str)
    s = data["sections"]
    assert set(s) == {"pipeline", "predict", "memory", "train", "read"}  # camelyon is GPU-only by default
    for sec in s.values():
        assert sec["command"].startswith("python benchmarks/") and sec["wall_s"] > 0

    t = s["predict"]["throughput"]
    for key in ("model_only_tiles_per_s", "end_to_end_tiles_per_s", "ratio_end_to_end", "tissue_mpx_per_s_end_to_end"):
        assert t[key] > 0, key
    assert t["ratio_end_to_end"] == pytest.approx(t["end_to_end_tiles_per_s"] / t["model_only_tiles_per_s"])

    pl = s["pipeline"]["by_readers"]
    assert set(pl) == {"threads", "processes"}
    for r in pl.values():
        assert r["tiles"] > 0 and r["read_only_tiles_per_s"] > 0 and r["end_to_end_tiles_per_s"] > 0
        assert r["ratio_end_to_end_to_read"] == pytest.approx(r["end_to_end_tiles_per_s"] / r["read_only_tiles_per_s"])

    m = s["memory"]
    assert [r["size_px"] for r in m["runs"]] == [1024, 2048]  # each a fresh subprocess
    assert all(r["peak_rss_mb"] > 0 for r in m["runs"])
    assert m["ratio_largest_smallest"] == pytest.approx(m["runs"][-1]["peak_rss_mb"] / m["runs"][0]["peak_rss_mb"])

    tr = s["train"]
    assert tr["loop_tiles_per_s"] > 0 and tr["model_only_tiles_per_s"] > 0
    assert tr["ratio"] == pytest.approx(tr["loop_tiles_per_s"] / tr["model_only_tiles_per_s"])

    names = [sl["slide"] for sl in s["read"]["slides"]]
    assert names[0] == "read_1024.tif"
    for sl in s["read"]["slides"]:
        assert {(r["backend"], r["pattern"]) for r in sl["runs"]} == {
            (b, p) for b in ("tiffslide", "openslide") for p in ("aligned", "random", "camseg")}
        assert set(sl["ratio_tiffslide_openslide"]) == {"aligned@1", "random@1", "camseg@1"}


def test_smoke_read_includes_the_real_aperio_file_when_present(smoke, shared_data):
    _, data, _ = smoke
    assert "cmu-1-small-region.svs" in [sl["slide"] for sl in data["sections"]["read"]["slides"]]
