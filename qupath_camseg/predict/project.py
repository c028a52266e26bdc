"""Every image of a QuPath project through :func:`~qupath_camseg.predict.slide.predict_slide`, into
``<project>/camseg/``, and (through the paquo door when QuPath is installed) our objects into the
project hierarchy. Under ``torchrun`` the images are shared out between the processes.

The steps: resolve the entries (:func:`_resolve_entries`); predict this process's share
(:func:`_run_own_shard`); on rank 0, gather the other ranks' results (:func:`_gather`); raise the
summary error (:func:`_raise_failures`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from shapely.geometry.base import BaseGeometry

from qupath_camseg._dist import Dist, env_rank, shard_by_weight
from qupath_camseg._io import entry_file
from qupath_camseg.annotations import QPObject, read_geojson
from qupath_camseg.errors import CamsegError, ImagesFailedError, InvalidSettingsError, ProjectError, QuPathNotFoundError
from qupath_camseg.model import LoadedModel, compile_model, load_model
from qupath_camseg.predict.options import PredictOptions, PredictResult, Progress, no_progress
from qupath_camseg.predict.report import read_report
from qupath_camseg.predict.run_lock import run_lock
from qupath_camseg.predict.slide import predict_slide
from qupath_camseg.predict.suggestions import reviewed_ground
from qupath_camseg.qupath import ProjectEntry, find_qupath_installation, open_project

__all__ = ["predict_project"]

#: Per-image outcome codes exchanged between ranks (summed: each image has exactly one owner).
_DONE, _SKIPPED, _FAILED = 1, 2, 3
#: How long ranks wait for each other at the end: slides are not split, so with a few large slides
#: ranks may finish hours apart (torchrun stops every rank as soon as one dies, so no hang).
_DDP_TIMEOUT = datetime.timedelta(days=7)

#: A project image and its file on this machine (or why it cannot be found).
_Resolved = list[tuple[ProjectEntry, Path | CamsegError]]


@dataclass
class _Outcomes:
    """Per image (an index into the resolved entries): its status code (``_DONE``, ``_SKIPPED``,
    ``_FAILED``, 0 for another rank's image), its result and its error."""

    status: torch.Tensor
    results: dict[int, PredictResult] = field(default_factory=dict)
    errors: dict[int, CamsegError] = field(default_factory=dict)

    def fail(self, i: int, image: str, err: CamsegError, emit: Progress) -> None:
        """Image ``i`` failed with ``err``: record it and report it by an ``error`` event."""
        self.errors[i], self.status[i] = err, _FAILED
        emit({"event": "error", "image": image, "message": str(err)})


def predict_project(
    project_path: str | Path, model: LoadedModel | str | Path, *, images: Sequence[str] = (),
    options: PredictOptions | None = None, project_write: bool = True, progress: Progress | None = None,
    door: str = "auto",
) -> list[PredictResult]:
    """Predict the images of a QuPath project (all, or ``images`` by name or entry ID).

    Outputs go to ``<project>/camseg/``. With ``project_write`` and a QuPath installation, our
    objects are also written into each image's hierarchy through the paquo door (backup first,
    the user's own objects untouched). An image that fails is reported by an ``error`` event and
    the others continue; at the end its own error is raised when it is the only one, else a
    :class:`ImagesFailedError` naming the failed images.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the images are shared out by file size, the same way on
    every rank (:func:`~qupath_camseg._dist.shard_by_weight`); each rank predicts and writes its
    own (every file atomically). The ranks meet once at the end (gloo): rank 0 then writes the new
    results into the project hierarchy (a single writer, so the project lock never sees two),
    returns the results of all images and raises the summary error; the others return their own.
    The project's lock is held from the start to the end (a second predict or an import stops at
    once). ``door``: where the objects go besides ``camseg/``: ``"auto"`` (into the hierarchy
    when QuPath is installed), ``"files"`` (``camseg/`` only) or ``"paquo"`` (into the hierarchy;
    :class:`QuPathNotFoundError` at once without QuPath).
    """
    folder = Path(project_path).parent if Path(project_path).suffix == ".qpproj" else Path(project_path)
    if door not in ("auto", "files", "paquo"):
        raise ValueError(f"door must be 'auto', 'files' or 'paquo', not {door!r}")
    with run_lock(folder / "camseg", what=f"QuPath project {folder}"):
        write = _write_door(door, project_write, progress or no_progress)
        return _predict_project(project_path, model, images, options, write, progress)


def _write_door(door: str, project_write: bool, emit: Progress) -> bool:
    """Whether objects go into the hierarchy (the paquo door); says which door in a note."""
    if door == "files" or not project_write:
        why = "--door files" if door == "files" else "--no-project-write"
        emit({"event": "note", "message": f"results go to camseg/ only (files door: {why})"})
        return False
    folder, reason = find_qupath_installation()
    if folder is None and door == "paquo":
        raise QuPathNotFoundError(f"--door paquo needs QuPath: {reason}")
    emit({"event": "note",
          "message": "results go to camseg/ and into the QuPath project (paquo door)" if folder is not None
          else f"results go to camseg/ only: not written into the QuPath project hierarchy (files door: {reason}); "
               "import predictions/*.geojson in QuPath or run the Groovy bridge"})
    return folder is not None


def _predict_project(project_path: str | Path, model: LoadedModel | str | Path, images: Sequence[str],
                     options: PredictOptions | None, project_write: bool, progress: Progress | None,
                     ) -> list[PredictResult]:
    """:func:`predict_project`, under the project's lock."""
    opts = options or PredictOptions()
    emit = progress or no_progress
    resolved, out_dir = _resolve_entries(project_path, images)
    if opts.tissue not in ("auto", "none") and Path(opts.tissue).is_file() and len(resolved) > 1:
        raise InvalidSettingsError(f"--tissue {opts.tissue} outlines one slide but {len(resolved)} images are "
                                   "selected; pick its image with --images, or pass a folder with one file per slide")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=opts.device)
    if opts.compile:
        lm = compile_model(lm)
    rank, world, _ = env_rank()
    owner = shard_by_weight([_file_size(img) for _, img in resolved], world)
    outcomes = _Outcomes(torch.zeros(len(resolved), dtype=torch.int64))
    dist = Dist.from_env("cpu", backend="gloo", timeout=_DDP_TIMEOUT)  # a stand-in outside torchrun
    try:
        mine = [i for i in range(len(resolved)) if owner[i] == rank]
        _run_own_shard(Path(project_path), resolved, mine, lm, out_dir, opts, emit, outcomes,
                       write_back=project_write and world == 1, read_door="paquo" if project_write else "files")
        outcomes.status = dist.all_reduce(outcomes.status)
    finally:
        dist.close()
    if world > 1 and rank == 0:
        _gather(Path(project_path), resolved, out_dir, emit, outcomes, write_back=project_write)
    failed = [i for i in range(len(resolved)) if int(outcomes.status[i]) == _FAILED]
    if failed and rank == 0:
        _raise_failures(resolved, failed, owner, outcomes.errors)
    return [outcomes.results[i] for i in sorted(outcomes.results)]


def _resolve_entries(project_path: str | Path, images: Sequence[str]) -> tuple[_Resolved, Path]:
    """The selected entries (each once) with their image files, and the project's output folder."""
    with open_project(project_path, "r", door="files") as proj:
        entries = [proj.entry(n) for n in images] if images else list(proj.entries)
        if not entries:
            raise ProjectError(f"{proj.qpproj} has no images; add images in QuPath (File > Project > Add images), "
                               "or pass a slide file to qcamseg predict")
        entries = list({e.entry_id: e for e in entries}.values())  # an image named twice runs once
        resolved: _Resolved = []
        for e in entries:
            try:
                resolved.append((e, proj.image_path(e)))
            except CamsegError as err:
                resolved.append((e, err))
        return resolved, proj.camseg_dir


def _file_size(path: Path | CamsegError) -> int:
    """Bytes of a slide file, the work estimate for sharding (compressed tiles: tissue, not glass)."""
    try:
        return path.stat().st_size if isinstance(path, Path) else 0
    except OSError:
        return 0


def _run_own_shard(project_path: Path, resolved: _Resolved, mine: list[int], lm: LoadedModel, out_dir: Path,
                   opts: PredictOptions, emit: Progress, outcomes: _Outcomes, *, write_back: bool,
                   read_door: str) -> None:
    """Predict the images ``mine`` (indices into ``resolved``), recording each one's outcome in
    ``outcomes``; ``write_back``: each new result into the hierarchy; ``read_door``: where the
    annotations that keep review boxes off labelled ground are read."""
    reviewed = _reviewed(project_path, [resolved[i][0] for i in mine], read_door, emit) if opts.suggest else {}
    for i in mine:
        e, img = resolved[i]
        try:
            if isinstance(img, CamsegError):
                raise img
            res = predict_slide(img, lm, out_dir, entry_id=e.entry_id, image_name=e.image_name,
                                options=opts, progress=emit, reviewed=reviewed.get(e.entry_id))
            outcomes.results[i] = res
            outcomes.status[i] = _SKIPPED if res.skipped else _DONE
            if write_back and not res.skipped:
                _write_back(project_path, e.entry_id, res.objects, emit, e.image_name)
        except CamsegError as err:
            outcomes.fail(i, e.image_name, err, emit)


def _reviewed(project_path: Path, entries: list[ProjectEntry], door: str,
              emit: Progress) -> dict[str, BaseGeometry | None]:
    """What the pathologist has labelled on each of ``entries`` (level-0 px, by entry ID; read
    through ``door``, the project opened once), where no review box is suggested. An unreadable
    annotation file or project costs the suggestions that, with a note, not the run."""
    out: dict[str, BaseGeometry | None] = {}
    note = "review boxes may fall on ground you annotated already (annotations not read: {})"
    try:
        with open_project(project_path, "r", door=door) as proj:  # type: ignore[arg-type]
            for e in entries:
                try:
                    out[e.entry_id] = reviewed_ground(proj.read_annotations(e))
                except CamsegError as err:
                    emit({"event": "note", "image": e.image_name, "message": note.format(err)})
    except CamsegError as err:
        emit({"event": "note", "message": note.format(err)})
    return out


def _gather(project_path: Path, resolved: _Resolved, out_dir: Path, emit: Progress, outcomes: _Outcomes, *,
            write_back: bool) -> None:
    """Rank 0 after the ranks met: the results of the images other ranks predicted (from their
    reports) and, with ``write_back``, every new result into the hierarchy (the single writer)."""
    for i, (e, _img) in enumerate(resolved):
        status = int(outcomes.status[i])
        if status not in (_DONE, _SKIPPED):
            continue
        try:
            res = outcomes.results.get(i) or _result_from_report(out_dir, e, skipped=status == _SKIPPED)
            outcomes.results[i] = res
            if write_back and status == _DONE:
                objs = res.objects or read_geojson(res.outputs["geojson"])
                _write_back(project_path, e.entry_id, objs, emit, e.image_name)
        except CamsegError as err:
            outcomes.fail(i, e.image_name, err, emit)


def _result_from_report(out_dir: Path, entry: ProjectEntry, *, skipped: bool) -> PredictResult:
    """The result of an image another rank predicted, from its report (written last, atomically)."""
    report = read_report(entry_file(out_dir, "reports", entry.entry_id, ".json"))
    outputs = {k: Path(v) for k, v in report.get("outputs", {}).items()}
    return PredictResult(entry.image_name, entry.entry_id, outputs, report, skipped=skipped)


def _raise_failures(resolved: _Resolved, failed: list[int], owner: list[int], errors: dict[int, CamsegError]) -> None:
    """Raise the error of the one failed image, or one naming all failed images."""
    if len(failed) == 1 and failed[0] in errors:
        raise errors[failed[0]]
    names = [resolved[i][0].image_name for i in failed]
    if len(failed) == 1:  # its error was printed by the torchrun process that owned it
        raise ImagesFailedError(f"{names[0]} failed in torchrun process rank {owner[failed[0]]}; see its message "
                          "above, fix it and run again (finished images are skipped)")
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ImagesFailedError(f"{len(failed)} of {len(resolved)} images failed ({listed}); see the messages above, "
                      "fix them and run again (finished images are skipped)")


def _write_back(project_path: Path, entry_id: str, objs: list[QPObject], emit: Progress, image: str) -> None:
    """Our objects into the QuPath hierarchy through the paquo door, if QuPath is installed."""
    folder, reason = find_qupath_installation()
    if folder is None:
        emit({"event": "note", "image": image,
              "message": f"results not written into the QuPath project hierarchy ({reason}); "
                         "import predictions/*.geojson in QuPath or run the Groovy bridge"})
        return
    with open_project(project_path, "r+", door="paquo") as proj:
        backup = proj.write_objects(entry_id, objs)
    emit({"event": "note", "image": image, "message": f"objects written into the QuPath project (backup in {backup})"})
