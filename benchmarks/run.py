"""The benchmark suite: one command, one table, one JSON file (issue 8).

    python benchmarks/run.py --quick                 # a few minutes on a laptop CPU
    python benchmarks/run.py                         # the full CPU suite (≈ 10 min on 2 cores)
    python benchmarks/run.py --device cuda           # on a GPU machine (see benchmarks/gpu.sh)
    python benchmarks/run.py --smoke --out /tmp/r    # seconds: checks that everything runs

Sections (``--sections``; each runs in its own process, so one failure or time-out costs only
its own row):

* ``pipeline`` - :mod:`bench_pipeline`: ``predict_slide`` with a model that costs nothing, so the
  pipeline around the model alone is timed, with reader threads and with reader processes;
* ``predict``  - :mod:`bench_predict`: ``predict_slide`` end to end vs the model alone on the
  identical tiles in the same process (tiles/s, tissue Mpx/s); also gives ``memory``;
* ``memory``   - :mod:`bench_predict`: peak RSS predicting 6k², 20k², 60k² slides, each in a fresh
  subprocess (whole process and prediction phase);
* ``train``    - :mod:`bench_train`: the full training loop vs the model-only step, and the
  data loader alone (tiles/s per worker, workers needed to feed the model);
* ``read``     - :mod:`bench_read`: tiffslide vs OpenSlide tile reads on a synthetic pyramid and
  on CMU-1-small-region.svs;
* ``camelyon`` - :mod:`bench_camelyon`: a Camelyon-size slide through ``qcamseg predict`` with
  the default model and a ResNet-34 U-Net (GPU default; opt-in on a CPU: it takes an hour there);
* ``cascade``  - :mod:`bench_cascade`: cascade vs single pass on a tumour slide and a tumour-free
  one, the default model and its screen trained first (Dice, FROC, speed-up; opt-in: ``--sections
  cascade``; on cuda Camelyon-size slides).

Ratios measured within one run, not absolute times, are the figures of merit: the machine may be
shared (the load average is recorded before and after every section). The JSON goes to
``--out/<date>-<machine>[-quick|-smoke].json`` and is rewritten after every section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS = ("camelyon", "cascade", "pipeline", "predict", "memory", "train", "read")
#: Sections run only when named (``--sections``): they train a model first.
OPT_IN = ("cascade",)
SCHEMA = "qupath-camseg benchmarks v1"

#: Arguments of each benchmark script by mode; ``{cpus}`` is the CPU count.
_ARGS: dict[str, dict[str, list[str]]] = {
    "smoke": {
        "predict": ["--sizes", "1024", "2048", "--throughput-size", "1024", "--throughput-mpp", "2.0",
                    "--throughput-tile", "64", "--width", "4", "--repeats", "1", "--batch-size", "4", "--workers", "1"],
        "train": ["--slides", "2", "--slide-px", "512", "--mpp", "2.0", "--tile", "32", "--width", "4", "--depth", "2",
                  "--batch-size", "2", "--steps", "3", "--workers", "0"],
        "read": ["--synthetic-px", "1024", "--reads", "4", "--repeats", "1"],
        "pipeline": ["--size", "2048", "--repeats", "1", "--workers", "2", "--readers", "threads", "processes"],
        "camelyon": ["--width-mm", "1", "--height-mm", "1", "--models", "default", "--model-only-tiles", "2",
                     "--predict-args", "--workers 1 --batch-size 2", "--batch-size", "2", "--gen-workers", "1"],
        "cascade": ["--tissue-mm2", "0.6", "--train-steps", "2", "--train-tile", "64", "--train-batch", "2",
                    "--screen-steps", "10"],
    },
    "quick": {
        "predict": ["--sizes", "6000", "20000", "60000", "--throughput-size", "6000", "--repeats", "1"],
        "train": ["--slides", "2", "--slide-px", "1024", "--tile", "64", "--steps", "12"],
        "read": ["--synthetic-px", "2048", "--reads", "32", "--repeats", "2"],
        "pipeline": ["--size", "8192", "--repeats", "1", "--readers", "threads", "processes"],
        "camelyon": ["--width-mm", "3", "--height-mm", "6", "--models", "default", "--model-only-tiles", "16"],
        "cascade": ["--tissue-mm2", "2"],
    },
    "full": {
        "predict": ["--sizes", "6000", "20000", "60000", "--throughput-size", "6000", "--repeats", "2"],
        "train": ["--steps", "30"],
        "read": ["--synthetic-px", "4096", "--reads", "64", "--repeats", "3"],
        "pipeline": ["--repeats", "2", "--readers", "threads", "processes"],
        "camelyon": ["--models", "default", "resnet34"],
        "cascade": [],
    },
    "cuda": {
        "predict": ["--sizes", "6000", "20000", "60000", "--throughput-size", "20000", "--throughput-mpp", "0.5",
                    "--throughput-tile", "512", "--batch-size", "32", "--workers", "{cpus}", "--repeats", "2"],
        "train": ["--tile", "512", "--width", "32", "--batch-size", "32", "--steps", "100", "--mpp", "0.5"],
        "read": ["--synthetic-px", "4096", "--reads", "128", "--threads", "1", "{cpus}", "--repeats", "2"],
        "pipeline": ["--size", "20000", "--workers", "{cpus}", "--batch-size", "32", "--repeats", "2", "--readers", "threads", "processes"],
        "camelyon": ["--models", "default", "resnet34"],
        "cascade": ["--camelyon", "--train-tile", "512", "--train-batch", "8", "--train-steps", "400",
                    "--screen-steps", "3000"],
    },
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_info(device: str) -> dict[str, Any]:
    """What ran the suite: CPU model and count, GPU name, versions, load, git commit."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
                            "python": platform.python_version(), "hostname": platform.node()}
    try:
        import torch

        info["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                               text=True, check=False).stdout.strip()
        info["git"] = commit + ("+dirty" if dirty else "") if commit else None
    except OSError:
        info["git"] = None
    info["slug"] = _slug(info["gpu"]) if "gpu" in info else f"{_slug(platform.machine())}-{os.cpu_count()}cpu"
    return info


def _bench(script: str, args: list[str], json_path: Path, timeout: float | None, log: Path) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` in a fresh process; its JSON, or ``{"error": ...}``."""
    cmd = [sys.executable, str(HERE / script), *args, "--json", str(json_path)]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        # its own process group, so that a time-out also stops the processes it started
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            error = None if rc == 0 else f"exit code {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            error = f"timed out after {timeout:.0f} s"
    if error:  # the end of the section's output, so that a remote run's JSON says why
        error += ": " + log.read_text(encoding="utf-8", errors="replace")[-600:].strip().replace("\n", " | ")
    meta = {"command": shlex.join(["python", f"benchmarks/{script}", *args]), "wall_s": time.perf_counter() - t0,
            "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    if json_path.is_file():  # a benchmark that wrote partial JSON before failing still counts
        try:
            return {**json.loads(json_path.read_text(encoding="utf-8")), **meta, **({"error": error} if error else {})}
        except ValueError:
            pass
    return {**meta, "error": error or "no JSON written"}


def _option_ints(argv: list[str], *options: str) -> list[int]:
    """The integers following each of ``options`` in ``argv`` (up to the next ``--flag``)."""
    out: list[int] = []
    for opt in options:
        if opt in argv:
            for a in argv[argv.index(opt) + 1:]:
                if not a.isdigit():
                    break
                out.append(int(a))
    return out


def _prepare_predict_slides(workdir: Path, sizes: list[int]) -> None:
    """Write bench_predict's missing slides in parallel (it reuses ``workdir/bench_<size>.tif``)."""
    sys.path.insert(0, str(HERE))
    try:
        from bench_predict import write_bench_slide
    except ImportError:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sorted(set(sizes)) if not (workdir / f"bench_{s}.tif").exists()]
    if len(todo) > 1:
        try:
            with ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1)) as pool:
                list(pool.map(write_bench_slide, [workdir / f"bench_{s}.tif" for s in todo], todo))
        except Exception as err:  # noqa: BLE001 - bench_predict then writes them itself
            print(f"writing the predict slides in parallel failed ({err}); bench_predict will", file=sys.stderr)


def _prepare(jobs: list[tuple[str, str, list[str]]], workdir: Path, log: Path) -> None:
    """Write every section's slides at once (they are cached in ``workdir``), so that generation
    overlaps across CPU cores instead of adding up section by section."""
    procs = []
    with open(log, "a", encoding="utf-8") as fh:
        for key, script, argv_ in jobs:
            if key == "camelyon":
                procs.append(subprocess.Popen([sys.executable, str(HERE / script), *argv_, "--prepare-only"],
                                              stdout=fh, stderr=subprocess.STDOUT))
        for key, _, argv_ in jobs:
            if key == "predict":
                _prepare_predict_slides(workdir / "predict", _option_ints(argv_, "--sizes", "--throughput-size"))
            if key == "read":
                sys.path.insert(0, str(HERE))
                from bench_read import synthetic_slide

                for size in _option_ints(argv_, "--synthetic-px"):
                    if size:
                        synthetic_slide(workdir / "read", size)
        for p in procs:
            p.wait()


def _rows(sections: dict[str, Any], device: str) -> list[tuple[str, str, str, str, str]]:
    """Table rows ``(section, measure, value, figure of merit, target)``."""
    rows: list[tuple[str, str, str, str, str]] = []
    gpu = device.startswith("cuda")

    def verdict(value: float, target: float, above: bool) -> str:
        ok = value >= target if above else value <= target
        return f"{'≥' if above else '≤'} {target:g} {'ok' if ok else 'FAIL'}"

    for name, sec in sections.items():
        if sec.get("error"):
            rows.append((name, "error", sec["error"][:60], "", ""))
        if name == "predict" and "throughput" in sec:
            t = sec["throughput"]
            rows.append((name, f"model only ({t['tile_px']}² @ {t['mpp']} µm/px)", f"{t['model_only_tiles_per_s']:.2f} tiles/s", "", ""))
            rows.append((name, "inference stage", f"{t['inference_stage_tiles_per_s']:.2f} tiles/s",
                         f"{t['ratio_inference_stage']:.2f}×", ""))
            rows.append((name, "predict_slide end to end", f"{t['end_to_end_tiles_per_s']:.2f} tiles/s",
                         f"{t['ratio_end_to_end']:.2f}×", verdict(t["ratio_end_to_end"], 0.5 if gpu else 0.7, True)))
            rows.append((name, "tissue throughput end to end", f"{t['tissue_mpx_per_s_end_to_end']:.2f} Mpx/s", "", ""))
        if name == "pipeline" and "by_readers" in sec:
            for mode, r in sec["by_readers"].items():
                rows.append((name, f"read only, {r['workers']} {mode}", f"{r['read_only_tiles_per_s']:.0f} tiles/s", "", ""))
                rows.append((name, f"inference stage, {mode}", f"{r['inference_stage_tiles_per_s']:.0f} tiles/s",
                             f"{r['ratio_inference_stage_to_read']:.2f}× read", ""))
                rows.append((name, f"end to end, {mode}", f"{r['end_to_end_tiles_per_s']:.0f} tiles/s",
                             f"{r['ratio_end_to_end_to_read']:.2f}× read", ""))
        if name == "memory" and "runs" in sec:
            for r in sec["runs"]:
                rows.append((name, f"peak RSS {r['size_px']}²", f"{r['peak_rss_mb']:.0f} MB",
                             f"predict phase {r.get('predict_peak_rss_mb') or 0:.0f} MB", ""))
            rows.append((name, "ratio largest / smallest", "", f"{sec['ratio_largest_smallest']:.2f}×",
                         verdict(sec["ratio_largest_smallest"], 1.3, False)))
            if "ratio_predict_phase" in sec:
                rows.append((name, "ratio, prediction phase only", "", f"{sec['ratio_predict_phase']:.2f}×",
                             verdict(sec["ratio_predict_phase"], 1.3, False)))
        if name == "train" and "ratio" in sec:
            rows.append((name, "model-only step", f"{sec['model_only_tiles_per_s']:.1f} tiles/s", "", ""))
            rows.append((name, "full training loop", f"{sec['loop_tiles_per_s']:.1f} tiles/s", f"{sec['ratio']:.2f}×",
                         verdict(sec["ratio"], 0.8, True) if gpu else "(GPU: ≥ 0.8)"))
        if name == "train" and "loader" in sec:
            for key, label in (("one_worker", "loader only, 1 worker"), ("main_process", "loader only, main process")):
                if key in sec["loader"]:
                    rows.append((name, label, f"{sec['loader'][key]['tiles_per_s']:.1f} tiles/s", "", ""))
            for label, workers in (sec.get("workers_needed") or {}).items():
                rows.append((name, f"workers to feed {label}"[:60], f"{workers:.1f}", "", ""))
        if name == "read" and "slides" in sec:
            for sl in sec["slides"]:
                for r in sl["runs"]:
                    if r["backend"] != "tiffslide":
                        continue
                    other = next(o for o in sl["runs"] if o["backend"] == "openslide" and o["pattern"] == r["pattern"]
                                 and o["threads"] == r["threads"])
                    rows.append((name, f"{sl['slide'][:22]} {r['pattern']} ×{r['threads']}",
                                 f"{r['tiles_per_s']:.0f} / {other['tiles_per_s']:.0f} tiles/s",
                                 f"{r['tiles_per_s'] / other['tiles_per_s']:.2f}× tiffslide/openslide", ""))
        if name == "camelyon" and "models" in sec:
            s = sec["slide"]
            rows.append((name, f"slide {s['size_px'][0]}×{s['size_px'][1]} @ {s['mpp']}", f"{s['tissue_fraction']:.0%} tissue",
                         f"{s['tissue_gpx'] * 1e3:.0f} Mpx tissue", ""))
            for m, e in sec["models"].items():
                if "slide_seconds" not in e:
                    rows.append((name, f"{m}: error", str(e.get("predict", {}).get("error", ""))[:60], "", ""))
                    continue
                p = e["predict"]
                rows.append((name, f"{m}: qcamseg predict, process", f"{e['slide_seconds']:.1f} s",
                             f"{p['tiles']} tiles", verdict(e["slide_seconds"], 10, False) if gpu and m == "default" else ""))
                rows.append((name, f"{m}: model only", f"{e['model_only']['tiles_per_s']:.1f} tiles/s",
                             f"{e['gflop_per_tile']:.0f} GFLOP/tile" if e.get("gflop_per_tile") else "", ""))
                rows.append((name, f"{m}: predict_slide end to end", f"{p['tiles_per_s_predict_slide']:.1f} tiles/s",
                             f"{e['ratio_end_to_end']:.2f}×", verdict(e["ratio_end_to_end"], 0.5 if gpu else 0.7, True)))
        if name == "cascade" and "times_s" in sec:
            rows += _cascade_rows(sec)
    return rows


def _cascade_rows(sec: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Cascade vs single pass: per slide the speed-up (≥ 5× tumour, ≥ 10× tumour-free), then the
    held-out Dice (within 0.01) and FROC (within 0.02)."""
    import statistics

    rows: list[tuple[str, str, str, str, str]] = []
    for slide, target in (("tumor_001.tif", 5.0), ("normal_002.tif", 10.0)):
        t = {m: statistics.median(v) for m, v in sec["times_s"].get(slide, {}).items() if v}
        if {"cascade", "single"} <= set(t):
            up = t["single"] / t["cascade"]
            ex = (sec["reports"][f"{slide}/cascade"].get("cascade") or {}).get("tissue_examined_fraction")
            rows.append(("cascade", f"{slide}: cascade / single pass", f"{t['cascade']:.1f} / {t['single']:.1f} s",
                         f"{up:.1f}× ({ex:.1%} examined)" if ex is not None else f"{up:.1f}×",
                         f"≥ {target:g} {'ok' if up >= target else 'FAIL'}"))
    sc = sec.get("scores", {})
    for key, label, tol in (("dice_tumour_slide", "held-out Dice", 0.01), ("froc_score", "FROC", 0.02)):
        a, b = sc.get("cascade", {}).get(key), sc.get("single", {}).get(key)
        if a is not None and b is not None:
            rows.append(("cascade", f"{label}: cascade / single pass", f"{a:.3f} / {b:.3f}", f"{a - b:+.3f}",
                         f"≥ -{tol:g} {'ok' if a - b >= -tol else 'FAIL'}"))
    return rows


def format_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    """The rows as a plain-text table (widths fitted to the content)."""
    head = ("section", "measure", "value", "figure of merit", "target")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Sections: " + ", ".join(SECTIONS))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short CPU run (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="tiniest run: checks the suite works, numbers meaningless")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=None,
                    help="default: all but camelyon on cpu, all on cuda")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON and the logs")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="slides and models, kept between runs (default: a cache folder in the temp dir)")
    ap.add_argument("--section-timeout", type=float, default=None, help="seconds per section before it is stopped")
    ap.add_argument("--prepare-only", action="store_true", help="write the benchmark slides into --workdir and stop")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the table of an earlier run and stop")
    ap.add_argument("--jobs", type=int, default=None,
                    help="sections run at once (default 1; --smoke: all; timings then disturb each other)")
    ap.add_argument("--camelyon-args", default="", help="extra bench_camelyon.py arguments, e.g. \"--predict-args '--workers 16'\"")
    args = ap.parse_args(argv)

    if args.table:
        data = json.loads(args.table.read_text(encoding="utf-8"))
        print(format_table(_rows(data["sections"], data["device"])))
        return 0
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "cuda" if args.device == "cuda" else "full"
    sections = list(args.sections or [s for s in SECTIONS if (args.device == "cuda" or s != "camelyon")
                                      and s not in OPT_IN])
    workdir = args.workdir or Path(tempfile.gettempdir()) / f"qcamseg-bench-{mode_name}"
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(args.device)
    stem = f"{time.strftime('%Y-%m-%d')}-{info['slug']}" + ("" if mode_name in ("full", "cuda") else f"-{mode_name}")
    out_json, log = args.out / f"{stem}.json", args.out / f"{stem}.log"
    log.write_text("", encoding="utf-8")
    result: dict[str, Any] = {"schema": SCHEMA, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "mode": mode_name,
                              "device": args.device, "command": shlex.join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
                              "machine": info, "load_avg_1min_start": round(os.getloadavg()[0], 2), "sections": {}}
    cpus = str(os.cpu_count() or 1)
    table = {k: [a.replace("{cpus}", cpus) for a in v] for k, v in _ARGS[mode_name].items()}
    dev = ["--device", args.device]
    t_start = time.perf_counter()
    jobs: list[tuple[str, str, list[str]]] = []  # (key, script, arguments)
    if "predict" in sections or "memory" in sections:
        jobs.append(("predict", "bench_predict.py", [*table["predict"], *dev, "--workdir", str(workdir / "predict")]))
    if "pipeline" in sections:
        jobs.append(("pipeline", "bench_pipeline.py", [*table["pipeline"], *dev, "--workdir", str(workdir / "pipeline")]))
    if "train" in sections:
        jobs.append(("train", "bench_train.py", [*table["train"], *dev]))
    if "read" in sections:
        jobs.append(("read", "bench_read.py", [*table["read"], "--workdir", str(workdir / "read")]))
    if "cascade" in sections:
        jobs.append(("cascade", "bench_cascade.py", [*table["cascade"], *dev, "--workdir", str(workdir / "cascade")]))
    if "camelyon" in sections:
        jobs.append(("camelyon", "bench_camelyon.py", [*table["camelyon"], *shlex.split(args.camelyon_args), *dev,
                                                       "--workdir", str(workdir / "camelyon")]))
    jobs.sort(key=lambda j: sections.index(j[0]) if j[0] in sections else sections.index("memory"))
    _prepare(jobs, workdir, log)
    result["prepare_s"] = time.perf_counter() - t_start
    if args.prepare_only:
        print(f"slides ready in {workdir} ({result['prepare_s']:.0f} s)", file=sys.stderr)
        return 0
    n_jobs = len(jobs) if args.smoke and args.jobs is None else max(1, args.jobs or 1)

    def store(key: str, res: dict[str, Any]) -> None:
        if key == "predict":  # bench_predict measures both throughput and memory
            common = {k: res[k] for k in ("command", "wall_s", "load_avg_1min", "error") if k in res}
            if "predict" in sections:
                result["sections"]["predict"] = {**common, **({"throughput": res["throughput"]} if "throughput" in res else {})}
            if "memory" in sections:
                result["sections"]["memory"] = {**common, **res.get("memory", {})}
        else:
            result["sections"][key] = res
        result["wall_s"] = time.perf_counter() - t_start
        result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
        out_json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"[{result['wall_s']:6.0f} s] {key} done{' - ' + res['error'] if res.get('error') else ''}",
              file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="qcamseg-run-") as tmp, ThreadPoolExecutor(n_jobs) as pool:
        futures = {key: pool.submit(_bench, script, argv_, Path(tmp) / f"{key}.json", args.section_timeout,
                                    Path(tmp) / f"{key}.log")
                   for key, script, argv_ in jobs}
        for key, fut in futures.items():  # in section order, whatever finishes first
            res = fut.result()
            with open(log, "a", encoding="utf-8") as fh:
                fh.write((Path(tmp) / f"{key}.log").read_text(encoding="utf-8", errors="replace"))
            store(key, res)
    result["table"] = format_table(_rows(result["sections"], args.device))
    out_json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nqupath-camseg benchmarks, {mode_name} mode, device {args.device}: {info.get('gpu') or info['cpu']}, "
          f"{info['cpus']} CPUs, load {result['load_avg_1min_start']} → {result['load_avg_1min_end']}, "
          f"{result['wall_s']:.0f} s, {result['date']}\n")
    print(result["table"])
    print(f"\nJSON: {out_json}\nlog:  {log}")
    return 1 if any(s.get("error") for s in result["sections"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
