"""Training end to end on a generated QuPath project: accuracy, kill -9 + resume, bad inputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qupath_camseg.cli import main
from qupath_camseg.errors import (
    InvalidAnnotationError,
    InvalidSettingsError,
    ModelBundleError,
    OutputNotWritableError,
    TrainingDivergedError,
)
from qupath_camseg.model import load_bundle
from qupath_camseg.train import CHECKPOINT_NAME, TrainConfig, dice_ce_loss, train

# Small and fast: 2 µm/px, 64–128 px tiles, a narrow U-Net.
TINY = ["--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2", "--batch-size", "4", "--lr", "2e-3", "-q"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic 1.5 mm lymph-node slides with tumour outlines, made by `qcamseg synth`."""
    folder = tmp_path_factory.mktemp("train") / "proj"
    rc = main(
        [
            "synth",
            str(folder),
            "--slides",
            "3",
            "--width",
            "1536",
            "--height",
            "1536",
            "--mpp",
            "1.0",
            "--tile-px",
            "256",
            "--door",
            "files",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    return folder


@pytest.fixture()
def one_thread():
    """Deterministic, CI-sized CPU work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_training_reaches_dice_on_held_out_slide(project: Path, tmp_path: Path) -> None:
    """Acceptance: a short CPU run reaches validation Dice >= 0.8 on a slide it never saw."""
    out = tmp_path / "model"
    rc = main(
        [
            "train",
            str(project),
            "--out",
            str(out),
            "--mpp",
            "2",
            "--tile",
            "128",
            "--width",
            "8",
            "--depth",
            "3",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--tiles-per-epoch",
            "128",
            "--lr",
            "2e-3",
            "--workers",
            "1",
            "--seed",
            "0",
            "-q",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    best = metrics["best"]
    assert best["val_dice"] >= 0.8, metrics["history"]
    assert len(metrics["history"]) == 2 and metrics["history"][-1]["step"] == 32
    train_names, val_names = metrics["split"]["train"], metrics["split"]["val"]
    assert len(val_names) == 1 and len(train_names) == 2 and not set(val_names) & set(train_names)
    # the bundle is complete and describes itself
    model, cfg = load_bundle(out)
    assert cfg.class_names == ["Tumor"] and cfg.classes[0]["color"] == [200, 0, 0]
    assert cfg.mpp == 2.0 and cfg.tile_px == 128 and cfg.training["val_dice"] == pytest.approx(best["val_dice"])
    assert {i["role"] for i in cfg.training["data"]["images"]} == {"train", "val"}
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_info = json.loads((out / "train_config.json").read_text())
    assert run_info["config"]["seed"] == 0 and run_info["versions"]["torch"] == torch.__version__
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 2, 128, 128)


def _tiny_cli(project: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(project),
        "--out",
        str(out),
        *TINY,
        "--steps",
        "60",
        "--tiles-per-epoch",
        "80",
        "--checkpoint-steps",
        "5",
        "--seed",
        "1",
        *extra,
    ]


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(project: Path, tmp_path: Path, one_thread: None) -> None:
    # the reference: the same run without interruption
    ref = tmp_path / "ref"
    assert main(_tiny_cli(project, ref, "--workers", "0")) == 0
    # the victim: killed with SIGKILL once a mid-run checkpoint exists
    out = tmp_path / "victim"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qupath_camseg", *_tiny_cli(project, out, "--workers", "1")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sidecar = out / "checkpoints" / "last.json"
    killed_at = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            step = json.loads(sidecar.read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            step = 0
        if step >= 10:
            proc.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed_at is not None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    # every file left behind is whole
    ckpt = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert ckpt["state"]["global_step"] >= killed_at and ckpt["state"]["global_step"] < 60
    for f in out.rglob("*.json"):
        json.loads(f.read_text())
    assert not list(out.rglob("*.tmp"))
    # resume (in-process, same thread count) and finish
    assert main(["train", str(project), "--out", str(out), "--resume", "--workers", "0", "-q"]) == 0
    done = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    want = torch.load(ref / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert done["state"]["global_step"] == want["state"]["global_step"] == 60
    for name, tensor in want["model"].items():
        torch.testing.assert_close(done["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    hist_done = json.loads((out / "metrics.json").read_text())["history"]
    hist_ref = json.loads((ref / "metrics.json").read_text())["history"]
    assert [h["step"] for h in hist_done] == [h["step"] for h in hist_ref] == [20, 40, 60]
    for a, b in zip(hist_done, hist_ref):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_dice"] == pytest.approx(b["val_dice"], rel=1e-4, abs=1e-6)
    load_bundle(out)
    # resuming a finished run is a no-op that says so through its summary
    again = train(project, out, TrainConfig(workers=0), resume=True)
    assert again["steps"] == 60 and again["resumed_from_step"] == 60


def test_nan_loss_stops_with_diverged_error_and_keeps_a_good_checkpoint(
    project: Path, tmp_path: Path, one_thread: None
) -> None:
    out = tmp_path / "nan"
    cfg = TrainConfig(
        mpp=2.0,
        tile_px=64,
        arch={"width": 4, "depth": 2},
        batch_size=4,
        steps=30,
        tiles_per_epoch=1000,
        lr=1e30,
        workers=0,
        checkpoint_every_steps=1,
        max_bad_steps=3,
    )
    with pytest.raises(TrainingDivergedError, match=r"NaN/inf in 3 steps in a row .*lower --lr"):
        train(project, out, cfg)
    state = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert state["state"]["global_step"] >= 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # the CLI says the same in one line, exit code 2
    rc = main(
        [
            "train",
            str(project),
            "--out",
            str(tmp_path / "nan2"),
            *TINY[:-3],
            "--lr",
            "1e30",
            "--steps",
            "30",
            "--workers",
            "0",
            "--checkpoint-steps",
            "1",
            "-q",
        ]
    )
    assert rc == 2


def test_no_annotations(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    assert (
        main(
            [
                "synth",
                str(folder),
                "--slides",
                "1",
                "--width",
                "512",
                "--height",
                "512",
                "--mpp",
                "2",
                "--tile-px",
                "256",
                "--door",
                "files",
            ]
        )
        == 0
    )
    for f in (folder / "camseg" / "annotations").glob("*.geojson"):
        f.unlink()
    with pytest.raises(InvalidAnnotationError, match="no annotations in .*outline Tumor regions in QuPath"):
        train(folder, tmp_path / "m", TrainConfig(mpp=2.0, tile_px=64, workers=0, steps=1))
    assert not (tmp_path / "m" / "model.json").exists()


def test_unknown_class_lists_the_classes_found(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["train", str(project), "--out", str(tmp_path / "m"), *TINY, "--steps", "1", "--classes", "Tumour"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: class 'Tumour' is not used by any annotation" in err and "classes found: Tumor" in err
    assert "--classes" in err


def test_model_dir_not_writable(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="cannot create model folder"):
        train(project, blocker / "model", TrainConfig(mpp=2.0, tile_px=64, workers=0, steps=1))
    assert main(["train", str(project), "--out", str(blocker / "model"), *TINY, "--steps", "1"]) == 2
    assert "error: cannot create model folder" in capsys.readouterr().err


def test_run_folder_rules(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match="nothing to resume .* run without --resume"):
        train(project, tmp_path / "none", TrainConfig(workers=0), resume=True)
    used = tmp_path / "used"
    used.mkdir()
    (used / "model.json").write_text("{}")
    with pytest.raises(ModelBundleError, match="already holds a model .* choose another --out"):
        train(project, used, TrainConfig(workers=0))
    with pytest.raises(InvalidSettingsError, match="--tile 100 must be a multiple of 16"):
        train(project, tmp_path / "t", TrainConfig(tile_px=100, workers=0))


def test_resume_refuses_to_change_the_data(project: Path, tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "m"
    assert (
        main(
            [
                "train",
                str(project),
                "--out",
                str(out),
                *TINY,
                "--steps",
                "2",
                "--tiles-per-epoch",
                "8",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    with pytest.raises(ModelBundleError, match="trained with --mpp 2.0; --resume cannot change it"):
        train(project, out, TrainConfig(mpp=1.0, steps=4), resume=True)
    # more steps are fine: it continues from step 2
    result = train(project, out, TrainConfig(steps=4, workers=0), resume=True)
    assert result["resumed_from_step"] == 2 and result["steps"] == 4
    assert [h["step"] for h in result["history"]] == [2, 4]


def test_default_out_dir_is_inside_the_project(project: Path, one_thread: None) -> None:
    qpproj = project / "project.qpproj"
    assert main(["train", str(qpproj), *TINY, "--steps", "1", "--tiles-per-epoch", "4", "--workers", "0"]) == 0
    runs = list((project / "camseg" / "models").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.json").is_file()
    # --resume without --out finds the newest run there
    result = train(qpproj, None, TrainConfig(steps=2, workers=0), resume=True)
    assert Path(result["out_dir"]) == runs[0] and result["steps"] == 2


def test_dice_ce_loss_ignores_label_255() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    target[:, :4] = 255
    loss, ce, dice = dice_ce_loss(logits, target)
    loss.backward()
    assert logits.grad[:, :, :4].abs().max() == 0  # ignored pixels teach nothing
    assert logits.grad[:, :, 4:].abs().max() > 0
    perfect = torch.where(target == 1, 20.0, -20.0).float()
    good = torch.stack([-perfect, perfect], 1)
    assert float(dice_ce_loss(good, target)[0]) < 1e-3
    assert math.isfinite(float(ce.detach())) and 0 <= float(dice.detach()) <= 1


class _RecordingDist:
    """Stand-in for a 2-rank :class:`~qupath_camseg._dist.Dist` that records the calls ending a run."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.world_size, self.rank, self.is_main = 2, 1, False

    def barrier(self) -> None:
        self.calls.append("barrier")

    def close(self) -> None:
        self.calls.append("close")

    def finish(self) -> None:
        from qupath_camseg._dist import Dist

        Dist.finish(self)  # type: ignore[arg-type]  # the real method over the recorded calls


@pytest.mark.parametrize("fails", [False, True])
def test_ranks_leave_the_process_group_together_and_only_after_success(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """destroy_process_group is collective: a rank that left while rank 0 still calibrated aborted in
    gloo's teardown (CI, torchrun --resume). After success every rank waits, then leaves; after a
    failure none tears the group down (torchrun stops the others)."""
    from qupath_camseg.train import loop

    fake = _RecordingDist()
    monkeypatch.setattr(loop.Dist, "from_env", classmethod(lambda cls, *a, **k: fake))

    def run(*args: object, **kwargs: object) -> dict[str, str]:
        fake.calls.append("train")
        if fails:
            raise RuntimeError("boom")
        return {"out_dir": "x"}

    monkeypatch.setattr(loop, "_train", run)
    if fails:
        with pytest.raises(RuntimeError):
            loop.train("p", "o")
        assert fake.calls == ["train"]
    else:
        assert loop.train("p", "o") == {"out_dir": "x"}
        assert fake.calls == ["train", "barrier", "close"]


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "qupath_camseg",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ddp_two_processes_gloo_matches_single_process_and_resumes(
    project: Path, tmp_path: Path, one_thread: None
) -> None:
    """torchrun with 2 CPU processes: sharded tiles (2 × 2 = the single run's batch of 4), rank-0
    writes, a loss curve close to the single-process one, and --resume under DDP."""
    base = [
        "--mpp",
        "2",
        "--tile",
        "64",
        "--width",
        "4",
        "--depth",
        "2",
        "--lr",
        "2e-3",
        "--tiles-per-epoch",
        "16",
        "--seed",
        "2",
        "--workers",
        "0",
        "-q",
        "--steps",
        "8",
    ]
    ddp = tmp_path / "ddp"
    proc = _torchrun("train", str(project), "--out", str(ddp), *base, "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model: ") == 1  # only rank 0 reports
    single = tmp_path / "single"
    assert main(["train", str(project), "--out", str(single), *base, "--batch-size", "4"]) == 0
    h_ddp = json.loads((ddp / "metrics.json").read_text())["history"]
    h_one = json.loads((single / "metrics.json").read_text())["history"]
    assert [h["step"] for h in h_ddp] == [h["step"] for h in h_one] == [4, 8]
    for a, b in zip(h_ddp, h_one):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.2)
    run_info = json.loads((ddp / "train_config.json").read_text())
    assert run_info["world_size"] == 2 and run_info["effective_batch_size"] == 4
    assert not list(ddp.rglob("*.tmp"))
    load_bundle(ddp)
    # --resume under DDP continues from the checkpoint
    proc = _torchrun("train", str(project), "--out", str(ddp), "--resume", "--steps", "12", "--workers", "0", "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(ddp / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert ckpt["state"]["global_step"] == 12
    assert [h["step"] for h in json.loads((ddp / "metrics.json").read_text())["history"]] == [4, 8, 12]


# ------------------------------------------------------------------ issue 16 points 5 and 6
_SHORT = [*TINY, "--tiles-per-epoch", "8", "--workers", "0", "--seed", "1"]


def test_a_run_that_stopped_before_its_first_checkpoint_restarts(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    """Disk full while the first checkpoint is written: --resume used to say "run without it" and
    running without it "pass --resume". Now --resume says how to restart, and restarting works."""
    import qupath_camseg.train.run_folder as run_folder

    out = tmp_path / "m"
    real = run_folder.atomic_write_bytes

    def disk_full(path: Path, data: bytes) -> None:
        if Path(path).name == "last.pt":
            raise OutputNotWritableError(f"cannot write {path}: disk full; free disk space")
        real(path, data)

    monkeypatch.setattr(run_folder, "atomic_write_bytes", disk_full)
    args = ["train", str(project), "--out", str(out), *_SHORT, "--steps", "2"]
    assert main(args) == 2 and "disk full" in capsys.readouterr().err
    assert (out / "model.json").is_file() and not (out / CHECKPOINT_NAME).exists()
    monkeypatch.setattr(run_folder, "atomic_write_bytes", real)
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "before its first checkpoint" in err and f"without --resume: qcamseg train PROJECT --out {out}" in err
    assert main(args) == 0, capsys.readouterr().err
    assert (out / CHECKPOINT_NAME).is_file()
    assert len(list((out / "backups").glob("model.json.*.bak"))) == 1  # the stopped run's model, kept aside


def test_a_second_run_in_the_same_folder_stops_at_once(project: Path, tmp_path: Path, one_thread: None) -> None:
    """Two `train --out X --resume` side by side used to train (and checkpoint) over each other."""
    out = tmp_path / "m"
    assert main(["train", str(project), "--out", str(out), *_SHORT, "--steps", "2"]) == 0
    first = subprocess.Popen([sys.executable, "-m", "qupath_camseg", "train", str(project), "--out", str(out), *_SHORT,
                              "--steps", "100000", "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        owner = out / "camseg.lock.owner"
        deadline = time.monotonic() + 120
        while not owner.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert owner.is_file(), first.stderr.read().decode() if first.poll() is not None else "no lock taken"  # type: ignore[union-attr]
        second = subprocess.run([sys.executable, "-m", "qupath_camseg", "train", str(project), "--out", str(out),
                                 *_SHORT, "--steps", "3", "--resume"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"training folder {out} is in use by qcamseg pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()
        first.stderr.close()  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/dev/shm").is_dir() or sys.platform == "win32", reason="needs RLIMIT_FSIZE and /dev/shm")
def test_train_under_a_file_size_limit_is_one_error_line_and_leaves_no_shared_memory(
    project: Path, tmp_path: Path
) -> None:
    """Issue 16 point 8: under `ulimit -f` the loader workers died with a RuntimeError traceback
    (their shared-memory batch could not grow) and left torch_* files in /dev/shm."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (30 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    before = {p.name for p in Path("/dev/shm").glob("torch_*")}
    proc = subprocess.run([sys.executable, "-m", "qupath_camseg", "train", str(project), "--out", str(tmp_path / "m"),
                           *TINY, "--steps", "2", "--tiles-per-epoch", "8", "--workers", "2"],
                          capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and "file-size limit (ulimit -f)" in last
    assert {p.name for p in Path("/dev/shm").glob("torch_*")} - before == set()
