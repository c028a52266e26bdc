"""``benchmarks/bench_stain.py`` runs end to end in its tiniest mode and writes the JSON it promises
(the numbers of a smoke run mean nothing and are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_stain.py"


@pytest.mark.slow
def test_bench_stain_smoke(tmp_path: Path) -> None:
    out = tmp_path / "stain.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--arms", "plain", "macenko", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["arms"]) == {"plain", "macenko"}
    for arm in data["arms"].values():
        assert set(arm["dice"]) == {"none", "strong-h", "pale-e", "scanner"}
        assert all(0.0 <= d <= 1.0 for d in arm["dice"].values())
    assert data["arms"]["macenko"]["stain_norm"] == "macenko"
    assert all(data["costs"][f"normalise_ms_per_{px}_tile"] > 0 for px in (128, 256, 512))
    assert "normalise one tile" in proc.stdout
