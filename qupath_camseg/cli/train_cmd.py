"""``qcamseg train``: learn a tumour segmentation model from a QuPath project's annotations."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from qupath_camseg._dist import env_rank
from qupath_camseg.cli._options import (
    FiniteFloat,
    device_option,
    door_option,
    images_option,
    mpp_override_option,
    mpp_type,
    seed_option,
)

if TYPE_CHECKING:  # torch is imported when the command runs: `qcamseg --help` stays fast
    from qupath_camseg.train import TrainConfig

__all__ = ["train"]


def _split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--classes Tumor --classes Stroma`` or ``--classes Tumor,Stroma``."""
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


@click.command("train")
@click.argument("project", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Model folder to write [default: PROJECT/camseg/models/<date-time>; with --resume the newest run there].",
)
@click.option(
    "--mpp",
    type=mpp_type(),
    default=None,
    help="Pixel size the model works at, µm/px [default: 0.5].",
)
@click.option(
    "--tile",
    "tile_px",
    type=click.IntRange(min=16),
    default=None,
    help="Tile size in px at --mpp [default: 512; a multiple of 16 for the default U-Net].",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Epochs of --tiles-per-epoch tiles [default: 10]."
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Train for this many optimizer steps instead of --epochs."
)
@click.option(
    "--tiles-per-epoch", type=click.IntRange(min=1), default=None, help="Tiles drawn per epoch [default: 2048]."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Tiles per step (per GPU under torchrun) [default: 8].",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, max=10, min_open=True),
    default=None,
    help="Peak learning rate (AdamW, cosine decay) [default: 1e-3; scale with the total batch].",
)
@click.option(
    "--classes",
    "classes",
    multiple=True,
    help="Annotation classes to learn, in output order (repeat or comma-separate) [default: Tumor].",
)
@click.option(
    "--val-images",
    "val_images",
    multiple=True,
    help="Images (name or entry ID) held out for validation [default: ~20 % of the slides, by slide].",
)
@images_option
@click.option(
    "--unannotated",
    type=click.Choice(["negative", "ignore"]),
    default=None,
    help="Tissue outside every annotation: negative (Camelyon: outlines are exhaustive) or ignored "
    "[default: negative].",
)
@click.option(
    "--include-unannotated",
    is_flag=True,
    default=False,
    help="Also train on images without any annotation, as tumour-free slides.",
)
@click.option(
    "--arch",
    type=click.Choice(["unet", "smp"]),
    default=None,
    help="unet (built in) or smp (segmentation-models-pytorch encoder, see --encoder) [default: unet].",
)
@click.option(
    "--width", type=click.IntRange(min=1), default=None, help="U-Net channels at full resolution [default: 32]."
)
@click.option("--depth", type=click.IntRange(min=1, max=7), default=None, help="U-Net levels [default: 4].")
@click.option(
    "--encoder",
    default=None,
    help="smp encoder, e.g. resnet34 (implies --arch smp; ImageNet weights are downloaded once).",
)
@device_option
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes [default: from the CPU count].",
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "bf16", "fp16", "off"]),
    default="auto",
    show_default=True,
    help="Mixed precision on GPUs (ignored on CPU).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--checkpoint-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Also save a checkpoint every N steps [default: every 5 minutes and every epoch].",
)
@seed_option
@mpp_override_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--stain-norm",
    type=click.Choice(["none", "macenko"]),
    default=None,
    help="macenko: normalise every slide's H&E stains to a reference fitted on the training slides "
    "(stored in the model; predict follows it). For slides from several labs or scanners [default: none].",
)
@door_option
@click.option(
    "--init",
    "init_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Fine-tune: start from this model folder's weights, architecture, --mpp, --tile and --classes "
    "[default schedule then: 3 epochs at --lr 3e-4]. model.json records the parent and the annotations added since.",
)
@click.option("--screen", "screen_only", is_flag=True,
              help="Only add a screening model to the trained model folder --out (for predict --cascade).")
@click.option("--no-screen", is_flag=True,
              help="Do not train the screening model (predict then runs one full pass over all tissue).")
@click.option("--screen-steps", type=click.IntRange(min=1), default=None, hidden=True)
def train(
    project: Path,
    out_dir: Path | None,
    mpp: float | None,
    tile_px: int | None,
    epochs: int | None,
    steps: int | None,
    tiles_per_epoch: int | None,
    batch_size: int | None,
    lr: float | None,
    classes: tuple[str, ...],
    val_images: tuple[str, ...],
    images: tuple[str, ...],
    unannotated: str | None,
    include_unannotated: bool,
    arch: str | None,
    width: int | None,
    depth: int | None,
    encoder: str | None,
    device: str,
    workers: int | None,
    amp: str,
    resume: bool,
    checkpoint_steps: int | None,
    seed: int,
    slide_mpp: float | None,
    quiet: bool,
    stain_norm: str | None,
    door: str,
    init_dir: Path | None,
    screen_only: bool,
    no_screen: bool,
    screen_steps: int | None,
) -> None:
    """Train a segmentation model on PROJECT's annotations (a QuPath project folder or .qpproj).

    Tiles are drawn at --mpp from every annotated image (tumour and tumour borders oversampled,
    negatives from tissue only), augmented (flips, rotations, H&E stain jitter, brightness,
    contrast, blur) and fed to a U-Net. Each epoch is validated on held-out slides (pixel Dice);
    the best model is kept in the output folder, ready for `qcamseg predict`. Interrupted? Rerun
    with --resume. Then a small screening network is trained at 4 µm/px and its threshold chosen on
    the validation slides (tumour-pixel recall ≥ 0.99), so that predict can skip normal tissue.

    \b
    Examples:
      qcamseg train MyProject --epochs 20
      qcamseg train MyProject --out models/v1 --val-images Tumor_001.tif --val-images Normal_003.tif
      qcamseg train MyProject --out models/v1 --resume
      qcamseg train MyProject --init models/v1 --out models/v2     (after correcting predictions)
      torchrun --nproc_per_node=4 -m qupath_camseg train MyProject --out models/big
    """
    from qupath_camseg.train import default_out_dir
    from qupath_camseg.train import train as run_train

    config = _config(
        mpp=mpp, tile_px=tile_px, epochs=epochs, steps=steps, tiles_per_epoch=tiles_per_epoch,
        batch_size=batch_size, lr=lr, unannotated=unannotated, workers=workers, slide_mpp=slide_mpp,
        checkpoint_every_steps=checkpoint_steps, device=device, amp=amp, seed=seed,
        classes=_split_names(classes) if classes else None, val_images=tuple(val_images) or None,
        images=tuple(images) or None, include_unannotated=include_unannotated or None,
        arch=_arch(arch, width=width, depth=depth, encoder=encoder), stain_norm=stain_norm, door=door,
        init=str(init_dir.absolute()) if init_dir is not None else None,
    )
    rank, world_size, _ = env_rank()
    if screen_only:
        _screen_only(project, out_dir, config, quiet=quiet, steps=screen_steps)
        return
    if out_dir is None and not resume and world_size == 1:  # torchrun: rank 0 picks the folder
        out_dir = default_out_dir(project)
    try:
        result = run_train(project, out_dir, config, resume=resume, progress=not quiet, on_data=_say_data)
        if not no_screen:
            _screen_after(project, result, config, world_size=world_size, quiet=quiet, steps=screen_steps)
    except KeyboardInterrupt:
        where = f" --out {out_dir}" if out_dir is not None else ""
        click.echo(f"Interrupted. Continue from the last checkpoint with: qcamseg train {project}{where} --resume",
                   err=True)
        raise click.exceptions.Exit(130) from None
    if rank == 0:
        _report(project, result)


def _say_data(data: Any) -> None:
    """Which door the annotations came through, and how many per image (before the first step)."""
    counts = ", ".join(f"{name} {n}" for name, n in data.annotations.items())
    click.echo(f"annotations read through the {data.door} door ({counts})", err=True)


def _screen_only(project: Path, out_dir: Path | None, config: TrainConfig, *, quiet: bool, steps: int | None) -> None:
    """``--screen``: add (or finish, or recalibrate) the screen of the model folder ``out_dir``."""
    from qupath_camseg.cli._screen import add_screen, main_run_config

    if out_dir is None:
        raise click.BadParameter("names the model folder to add the screen to", param_hint="--out")
    main_config, val = main_run_config(out_dir, config)
    add_screen(project, out_dir, main_config, val, progress=not quiet, steps=steps)
    click.echo(f"model: {out_dir} (with its screen: qcamseg predict {project} --model {out_dir})")


def _screen_after(project: Path, result: dict[str, Any], config: TrainConfig, *, world_size: int,
                  quiet: bool, steps: int | None) -> None:
    """After the model: its screen (one process; under torchrun it is left for ``--screen``)."""
    from qupath_camseg.cli._screen import add_screen, main_run_config

    if world_size > 1:
        click.echo(f"the screen is not trained under torchrun; add it with: qcamseg train {project} --out "
                   f"{result['out_dir']} --screen", err=True)
        return
    main_config, _ = main_run_config(Path(result["out_dir"]), config)  # as run (--init resolves mpp, classes, ...)
    add_screen(project, Path(result["out_dir"]), main_config, tuple(result["val_images"]), progress=not quiet,
               steps=steps)


def _arch(name: str | None, *, width: int | None, depth: int | None, encoder: str | None) -> dict[str, Any] | None:
    """The ``arch`` dict from ``--arch/--width/--depth/--encoder`` (``None``: none given, the default)."""
    arch_name = "smp" if encoder else name
    if not (arch_name or width or depth):
        return None
    arch: dict[str, Any] = {"name": arch_name or "unet"}
    if arch["name"] == "smp":
        arch["encoder"] = encoder or "resnet34"
    else:
        arch.update({k: v for k, v in (("width", width), ("depth", depth)) if v is not None})
    return arch


def _config(**options: Any) -> TrainConfig:
    """The :class:`~qupath_camseg.train.TrainConfig` of the options (field name → value); ``None``
    (an option not given) keeps the default."""
    from qupath_camseg.train import TrainConfig

    return dataclasses.replace(TrainConfig(), **{k: v for k, v in options.items() if v is not None})


def _report(project: Path, result: dict[str, Any]) -> None:
    """Print the best validation scores, where the model is and the next command."""
    out = result["out_dir"]
    best = result.get("best") or {}
    if best.get("val_dice") is not None:
        click.echo(
            f"best validation Dice {best['val_dice']:.3f} (IoU {best['val_iou']:.3f}) at epoch {best['epoch']}, "
            f"step {best['step']}; validated on {', '.join(result['val_images'])}"
        )
    elif not result["val_images"]:
        click.echo("no validation images (only one annotated image): the model of the last epoch is kept")
    cal = result.get("calibration")
    if cal:
        ece = {k: [x for x in v.values() if x is not None] for k, v in (cal.get("ece") or {}).items()}
        shift = cal["logit_bias"][1] - cal["logit_bias"][0] if len(cal["logit_bias"]) == 2 else None
        text = f"calibrated: temperature {cal['temperature']:.3g}" + (
            f", class logit shifted by {shift:+.3f} (prior correction for the oversampling)" if shift is not None else "")
        if ece.get("before") and ece.get("after"):
            before, after = (sum(v) / len(v) for v in (ece["before"], ece["after"]))
            text += f"; calibration error (ECE) on the validation tiles {before:.3f} -> {after:.3f} (reliability.png)"
        click.echo(text)
    click.echo(f"model: {out}  (metrics.json, training_curve.png)")
    click.echo(f"next: qcamseg predict {project} --model {out}")
