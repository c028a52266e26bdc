"""Training on tiles of a QuPath project's annotations: settings, data, augmentation, the loop
and its run folder (checkpoints, metrics, resume).

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "augment": ["AugmentConfig", "IDENTITY_PARAMS", "N_PARAMS", "augment_tile", "dihedral", "draw_params", "photometric"],
        "config": ["FIXED_ON_RESUME", "TrainConfig"],
        "data": ["IGNORE_INDEX", "LabelledImage", "SamplingConfig", "TileSampler", "TrainTileDataset", "TrainingData", "ValTileDataset", "build_shapes", "collect_images", "prepare_image", "val_tiles"],
        "loop": ["dice_ce_loss", "train"],
        "run_folder": ["CHECKPOINT_NAME", "default_out_dir", "load_checkpoint", "merge_resume_config", "read_checkpoint", "resolve_out_dir", "save_checkpoint", "training_summary", "write_metrics", "write_run_info"],
    },
)
