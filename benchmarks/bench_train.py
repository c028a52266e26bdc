"""Training throughput: the full loop (read → label → augment → step) vs the model's own step rate.

Both are measured in one run, on identical batches: the model-only rate replays batches drawn
from the same data pipeline (same keys, already in device memory) through the same step
function (photometric augmentation on the device, loss, backward, AdamW); the full loop is
:func:`qupath_camseg.train.train` for ``--steps`` steps (steady-state tiles/s, after the first
step). The ratio full/model-only is the figure of merit (issue 8 target on a GPU: ≥ 0.8).

**Loader only** (no model): the tiles/s that ONE DataLoader worker process delivers, and the main
process with ``num_workers=0``, at GPU-sized settings whatever the run's own settings are:
``--loader-tile`` 512 px tiles at ``--loader-mpp`` 0.5 µm/px, read from a synthetic slide at
``--loader-slide-mpp`` 0.25 µm/px (so read from pyramid level 1, as on Camelyon16), with labels,
dihedral transforms and photometric parameters, collated into batches (in shared memory for the
worker). The projection ``workers needed = R / per-worker rate`` is printed for ``--feed-rates``
(default 522 tiles/s: a ResNet-34 U-Net training step on an H100) and for this run's model-only
rate (the one that matters when the run uses the loader's tile size and µm/px, as on a GPU). It
assumes one core per worker, linear scaling, and slides in the page cache (no disk waits); on a
machine with 8 or more CPUs, ``--loader-workers`` (default CPUs - 1) workers are also timed together.

    python benchmarks/bench_train.py                       # CPU-sized defaults
    python benchmarks/bench_train.py --loader-only         # just the loader measurement (≈ 30 s)
    python benchmarks/bench_train.py --device cuda --tile 512 --width 32 --batch-size 32 --steps 200

Prints a table and writes JSON (``--json``). Generates its synthetic project unless ``--project``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _make_project(folder: Path, *, slides: int, size_px: int, mpp: float) -> Path:
    from qupath_camseg.cli import main

    rc = main(
        [
            "synth",
            str(folder),
            "--slides",
            str(slides),
            "--width",
            str(size_px),
            "--height",
            str(size_px),
            "--mpp",
            str(mpp),
            "--door",
            "files",
        ]
    )
    if rc != 0:
        raise SystemExit(f"qcamseg synth failed ({rc})")
    return folder


def _model_only_rate(config, project: Path, device, steps: int) -> float:  # noqa: ANN001
    """Tiles/s of the step alone, replaying ``steps`` batches of the real pipeline from device memory."""
    import torch

    from qupath_camseg._dist import Dist
    from qupath_camseg.model import build_model, normalize_arch
    from qupath_camseg.train import TileSampler, TrainTileDataset, collect_images
    from qupath_camseg.train.epoch import optimizer_step
    from qupath_camseg.train.placement import Placement

    data = collect_images(project, config)
    ds = TrainTileDataset(data.train_images, mpp=config.mpp, tile_px=config.tile_px, seed=config.seed)
    sampler = TileSampler(steps, config.batch_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=config.batch_size, sampler=sampler, num_workers=0)
    batches = [(x.to(device), y.to(device), p.to(device)) for x, y, p in loader]
    torch.manual_seed(config.seed)
    placement = Placement.for_device(device, config.amp)
    model = placement.model(build_model(normalize_arch({**config.arch, "n_classes": len(config.classes)})))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=placement.amp_dtype == torch.float16)
    dist = Dist()

    def run(batch) -> None:  # noqa: ANN001
        x, y, p = batch
        optimizer_step(model, model, opt, scaler, placement.inputs(x, p), placement.targets(y),
                       amp_dtype=placement.amp_dtype, grad_clip=config.grad_clip, dist=dist)

    model.train()
    run(batches[0])  # warm-up (allocations, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches[1:]:
        run(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (len(batches) - 1) * config.batch_size / (time.perf_counter() - t0)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc``; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _loader_rates(project: Path, *, mpp: float, tile_px: int, tiles: int, batch_size: int, seed: int,
                  many: int = 0) -> dict:
    """Tiles/s of the training DataLoader alone (no model): one worker process, ``num_workers=0``,
    and (``many`` > 1) ``many`` workers together, which checks the projection on a many-core machine.

    The first batch (worker start, slide opening) is left out; each run draws different keys.
    ``cpu_ms_per_tile`` counts every thread of the process that prepares the tiles. All run with
    one torch thread, as training's workers do (``train._worker_init``): with more, collating a
    batch (``torch.stack``) on a busy machine costs more CPU than preparing its tiles.
    """
    import torch

    from qupath_camseg.train import TileSampler, TrainConfig, TrainTileDataset, collect_images
    from qupath_camseg.train.loaders import _worker_init

    data = collect_images(project, TrainConfig(classes=("Tumor",), mpp=mpp, tile_px=tile_px, seed=seed))
    ds = TrainTileDataset([*data.train_images, *data.val_images], mpp=mpp, tile_px=tile_px, seed=seed)
    timed = max(2, -(-tiles // batch_size))
    out: dict = {"tile_px": tile_px, "mpp": mpp, "batch_size": batch_size}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = [(1, "one_worker", timed), (0, "main_process", timed)]
    if many > 1:
        runs.append((many, "many_workers", max(timed, 8 * many)))
    for workers, key, n_batches in runs:
        sampler = TileSampler(n_batches + 1, batch_size)
        sampler.set_epoch(1000 + workers)
        kw = {"worker_init_fn": _worker_init, "prefetch_factor": 4} if workers else {}
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, **kw)
        it = iter(loader)
        next(it)  # start-up: worker process, slide handles
        pids = [w.pid for w in it._workers] if workers else [os.getpid()]
        cpu0, t0 = [_cpu_s(pid) for pid in pids], time.perf_counter()
        n = sum(len(next(it)[0]) for _ in range(n_batches))
        wall, cpu1 = time.perf_counter() - t0, [_cpu_s(pid) for pid in pids]  # workers still live: read now
        del it
        cpu = None if None in cpu0 or None in cpu1 else 1e3 * (sum(cpu1) - sum(cpu0)) / n  # type: ignore[arg-type]
        out[key] = {"workers": workers, "tiles": n, "tiles_per_s": n / wall, "ms_per_tile": 1e3 * wall / n, "cpu_ms_per_tile": cpu}
    torch.set_num_threads(threads)
    return out


def _many_workers(requested: int | None) -> int:
    if requested is not None:
        return requested
    cpus = os.cpu_count() or 1
    return cpus - 1 if cpus >= 8 else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=None, help="QuPath project (default: generate one)")
    ap.add_argument("--slides", type=int, default=3)
    ap.add_argument("--slide-px", type=int, default=2048, help="generated slide size, level-0 px")
    ap.add_argument("--slide-mpp", type=float, default=0.5, help="generated slide pixel size, µm/px")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mpp", type=float, default=2.0)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=Path("bench_train.json"))
    lo = ap.add_argument_group("loader only (no model; GPU-sized settings, independent of the options above)")
    lo.add_argument("--loader-only", action="store_true", help="measure the loader alone, skip the training runs")
    lo.add_argument("--loader-tiles", type=int, default=48, help="tiles timed per loader run (0: skip the measurement)")
    lo.add_argument("--loader-tile", type=int, default=512, help="tile size, px")
    lo.add_argument("--loader-mpp", type=float, default=0.5, help="training pixel size, µm/px")
    lo.add_argument("--loader-slide-mpp", type=float, default=0.25, help="generated slide pixel size, µm/px")
    lo.add_argument("--loader-slide-px", type=int, default=4096, help="generated slide size, level-0 px")
    lo.add_argument("--loader-batch-size", type=int, default=8)
    lo.add_argument("--loader-workers", type=int, default=None,
                    help="also time this many workers together (default: CPUs - 1 on machines with >= 8 CPUs, else none)")
    lo.add_argument("--feed-rates", type=float, nargs="*", default=[522.0],
                    help="model step rates (tiles/s) to project the worker count for; default: 522 (H100, ResNet-34 U-Net)")
    args = ap.parse_args(argv)

    import torch

    from qupath_camseg._runtime import resolve_device
    from qupath_camseg.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    loader = None
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        if args.loader_tiles > 0:
            loader_project = _make_project(Path(tmp) / "loader", slides=1, size_px=args.loader_slide_px,
                                           mpp=args.loader_slide_mpp)
            loader = _loader_rates(loader_project, mpp=args.loader_mpp, tile_px=args.loader_tile,
                                   tiles=args.loader_tiles, batch_size=args.loader_batch_size, seed=0,
                                   many=_many_workers(args.loader_workers))
            loader["slide_mpp"] = args.loader_slide_mpp
        if args.loader_only:
            if loader is None:
                raise SystemExit("--loader-only needs --loader-tiles > 0")
            return _report(args, device, loader, None, None)
        project = args.project or _make_project(
            Path(tmp) / "proj", slides=args.slides, size_px=args.slide_px, mpp=args.slide_mpp
        )
        config = TrainConfig(
            mpp=args.mpp,
            tile_px=args.tile,
            steps=args.steps,
            tiles_per_epoch=args.steps * args.batch_size,
            batch_size=args.batch_size,
            arch={"name": "unet", "width": args.width, "depth": args.depth},
            device=str(device),
            workers=args.workers,
            max_val_tiles=8,
            checkpoint_every_s=1e9,
        )
        model_rate = _model_only_rate(config, project, device, min(args.steps, 20))
        result = train(project, Path(tmp) / "model", config)
    return _report(args, device, loader, result["history"][-1], model_rate, workers=config.workers)


def _report(args: argparse.Namespace, device, loader: dict | None, record: dict | None,
            model_rate: float | None, *, workers: int | None = None) -> int:
    """Print the table and write the JSON (``record``/``model_rate`` None: loader only)."""
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "args": {k: str(v) for k, v in vars(args).items()},
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    cpus = f"{info['cpu_count']} CPUs, torch threads {info['torch_threads']}, load {info['load_avg_1min']}"
    print(f"{'device':<28}{info['device']} ({info['device_name']}), {cpus}")
    if record is not None and model_rate is not None:
        info.update(_loop_rows(args, record, model_rate, workers))
    if loader is not None:
        info["loader"] = loader
        info["workers_needed"] = _loader_rows(args, loader, info.get("model_only_tiles_per_s"))
    args.json.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def _loader_rows(args: argparse.Namespace, loader: dict, model_rate: float | None) -> dict[str, float]:
    """Print the loader rows and the projection; ``{label: workers needed}``."""
    setting = f"{loader['tile_px']} px @ {loader['mpp']} µm/px from {loader['slide_mpp']} µm/px slide, batch {loader['batch_size']}"
    print(f"{'loader only (no model)':<28}{setting}")
    rows = [("one_worker", "  1 worker process"), ("main_process", "  main process (0 workers)")]
    if "many_workers" in loader:
        rows.append(("many_workers", f"  {loader['many_workers']['workers']} worker processes"))
    for key, name in rows:
        r = loader[key]
        cpu = f", {r['cpu_ms_per_tile']:.1f} ms CPU" if r["cpu_ms_per_tile"] is not None else ""
        print(f"{name:<28}{r['tiles_per_s']:8.1f} tiles/s  ({r['ms_per_tile']:.1f} ms/tile{cpu})")
    per_worker = loader["one_worker"]["tiles_per_s"]
    rates = [(f"{r:g} tiles/s", r) for r in args.feed_rates]
    if model_rate is not None:
        tag = "this run's model-only step"
        if (args.tile, args.mpp) != (loader["tile_px"], loader["mpp"]):
            tag += f" at {args.tile} px @ {args.mpp} µm/px"
        rates.append((f"{model_rate:.1f} tiles/s ({tag})", model_rate))
    needed = {}
    for label, rate in rates:
        needed[label] = rate / per_worker
        print(f"{'  workers needed to feed':<28}{label} = {rate:.1f} / {per_worker:.1f} = {rate / per_worker:.1f}")
    return needed


def _loop_rows(args: argparse.Namespace, record: dict, model_rate: float, workers: int | None) -> dict:
    """Print the training-loop rows; their JSON fields."""
    loop_rate = record["tiles_per_s_steady"] or record["tiles_per_s"]
    ratio = loop_rate / model_rate
    info = {
        "workers": workers,
        "loop_tiles_per_s": loop_rate,
        "loop_tiles_per_s_incl_startup": record["tiles_per_s"],
        "data_wait_s": record["data_wait_s"],
        "train_time_s": record["train_time_s"],
        "model_only_tiles_per_s": model_rate,
        "ratio": ratio,
    }
    net = f"width {args.width} depth {args.depth}"
    print(f"{'tile / batch / U-Net':<28}{args.tile} px @ {args.mpp} µm/px / {args.batch_size} / {net}")
    print(f"{'model-only step':<28}{model_rate:8.1f} tiles/s")
    waited = f"waited {record['data_wait_s']:.1f} s of {record['train_time_s']:.1f} s for data"
    print(f"{'full training loop':<28}{loop_rate:8.1f} tiles/s  ({waited})")
    print(f"{'ratio loop / model-only':<28}{ratio:8.2f}")
    return info


if __name__ == "__main__":
    raise SystemExit(main())
