"""Training and prediction beside another PyTorch job (issue 18): how much slower under load?

    python benchmarks/bench_load.py                               # this checkout, 1 round
    mkdir /tmp/qcamseg-before && git archive <commit> | tar -x -C /tmp/qcamseg-before   # the code before
    python benchmarks/bench_load.py --before /tmp/qcamseg-before --rounds 2

With the demo's settings (``qcamseg demo --size quick``: 4 synthetic 4096² slides + 1 tumour-free,
``train --mpp 2.0 --tile 128 --width 8 --depth 3 --steps 40 --batch-size 8``, then ``predict`` of
the held-out slide, single pass; the model only, no screen), each command runs in a fresh process, alone and beside a
competing 2-thread PyTorch process (``torch_competitor.py``: a CNN's forward/backward loop with
torch's default OpenMP settings, started 3 s before), and optionally beside a single-threaded
CPU hog (``--hog``). With ``--before``, the same commands run from that checkout too, interleaved
(before alone, before loaded, after alone, after loaded, per round), so the ratios come from one
sitting. Acceptance (2 cores): loaded ÷ alone ≤ 2.5 for train and predict. Prints a table and
writes ``--json``. The machine may be shared with other work: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_HOG = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end:\n    pass\n"


def _env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "QCAMSEG_THREADS")}
    env["PYTHONPATH"] = str(src)
    return env


def _train_args(work: Path, out: Path) -> list[str]:
    return ["train", str(work / "project"), "--out", str(out), "--mpp", "2.0", "--tile", "128", "--width", "8",
            "--depth", "3", "--steps", "40", "--tiles-per-epoch", "160", "--batch-size", "8",
            "--val-images", "tumor_003.tif", "--device", "cpu", "--seed", "0", "--quiet"]


def _predict_args(work: Path, model: Path, src_tag: str) -> list[str]:
    return ["predict", str(work / "project" / "images" / "tumor_003.tif"), "--model", str(model), "--out",
            str(work / f"pred-{src_tag}"), "--device", "cpu", "--overwrite", "--progress", "none"]


def _timed(args: list[str], src: Path, extra: list[str] | None = None) -> float:
    """Seconds one ``qcamseg`` command takes in a fresh process (``python -m qupath_camseg``)."""
    t0 = time.perf_counter()  # cwd=src: ``python -m`` puts the working folder first on sys.path
    subprocess.run([sys.executable, "-m", "qupath_camseg", *args, *(extra or [])], env=_env(src), check=True,
                   stdout=subprocess.DEVNULL, cwd=src)
    return time.perf_counter() - t0


def _competitor(kind: str) -> subprocess.Popen[bytes] | None:
    if kind == "alone":
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    cmd = [sys.executable, str(HERE / "torch_competitor.py"), "--threads", "2"] if kind == "torch2" \
        else [sys.executable, "-c", _HOG]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    time.sleep(3.0)  # torch imported, the loop running
    return proc


def _prepare(work: Path) -> None:
    if not (work / "project" / "project.qpproj").is_file():
        subprocess.run([sys.executable, "-m", "qupath_camseg", "synth", str(work / "project"), "--slides", "4",
                        "--negatives", "1", "--width", "4096", "--height", "4096", "--seed", "0", "--overwrite",
                        "--door", "files"], env=_env(REPO), check=True, stdout=subprocess.DEVNULL)


def run(work: Path, versions: dict[str, Path], conditions: list[str], rounds: int) -> dict[str, Any]:
    """``times[version][command][condition]`` = list of seconds, interleaved per round."""
    _prepare(work)
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        v: {"train": {c: [] for c in conditions}, "predict": {c: [] for c in conditions}} for v in versions}
    for r in range(rounds):
        for tag, src in versions.items():
            model = work / f"model-{tag}"
            for cond in conditions:
                comp = _competitor(cond)
                try:
                    no_screen = _if_known(src, "train_cmd.py", "--no-screen")  # the model only, as before
                    run_dir = work / f"model-{tag}-{cond}-{r}"
                    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time
                    t_train = _timed(_train_args(work, run_dir), src, no_screen)
                    if not (model / "model.json").is_file():
                        _timed(_train_args(work, model), src, no_screen)
                    t_pred = _timed(_predict_args(work, model, tag), src, _if_known(src, "predict_cmd.py", "--cascade", "off"))
                finally:
                    if comp is not None:
                        comp.kill()
                        comp.wait()
                times[tag]["train"][cond].append(t_train)
                times[tag]["predict"][cond].append(t_pred)
                print(f"round {r + 1} {tag:>6} {cond:>7}: train {t_train:6.1f} s  predict {t_pred:6.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return times


def _if_known(src: Path, module: str, option: str, *value: str) -> list[str]:
    """``[option, *value]`` where the checkout's ``cli/<module>`` knows the option, else nothing."""
    text = (src / "qupath_camseg" / "cli" / module).read_text(encoding="utf-8")
    return [option, *value] if f'"{option}"' in text else []


def _table(times: dict[str, Any], conditions: list[str]) -> str:
    lines = [f"{'version':<8} {'command':<8} " + " ".join(f"{c + ' s':>10}" for c in conditions)
             + " " + " ".join(f"{c + ' ÷ alone':>15}" for c in conditions if c != "alone")]
    for tag, by_cmd in times.items():
        for cmd, by_cond in by_cmd.items():
            med = {c: statistics.median(v) for c, v in by_cond.items() if v}
            ratios = " ".join(f"{med[c] / med['alone']:15.2f}" for c in conditions if c != "alone")
            lines.append(f"{tag:<8} {cmd:<8} " + " ".join(f"{med[c]:10.1f}" for c in conditions) + " " + ratios)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=None, help="a checkout of the code before the fix")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--hog", action="store_true", help="also beside a single-threaded CPU hog")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "qcamseg-bench-load")
    ap.add_argument("--json", type=Path, default=Path("bench_load.json"))
    args = ap.parse_args(argv)
    versions = {"before": args.before.resolve()} if args.before else {}
    versions["after"] = REPO
    conditions = ["alone", "torch2"] + (["hog1"] if args.hog else [])
    args.workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    times = run(args.workdir, versions, conditions, args.rounds)
    table = _table(times, conditions)
    print("\n" + table)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "load_avg_1min": [load0, os.getloadavg()[0]], "versions": {k: str(v) for k, v in versions.items()},
           "command": "python benchmarks/bench_load.py " + " ".join(argv or sys.argv[1:]), "times_s": times,
           "table": table}
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
