"""Training on tiles of a QuPath project's annotations: settings (``config``), labelled images
(``images``, ``collect``), tile datasets (``datasets``), augmentation, the loss, the loop
(``loop`` → ``session``, ``epoch``, ``validate``) and its run folder (checkpoints, metrics, resume).

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "augment": ["AugmentConfig", "IDENTITY_PARAMS", "N_PARAMS", "augment_tile", "dihedral", "draw_params", "photometric"],
        "collect": ["TrainingData", "collect_images"],
        "config": ["FIXED_ON_RESUME", "SamplingConfig", "TrainConfig"],
        "datasets": ["TileSampler", "TrainTileDataset", "ValTileDataset", "val_tiles"],
        "stain_fit": ["TrainingStains", "fit_training_stains", "sample_tiles"],
        "images": ["IGNORE_INDEX", "LabelledImage", "build_shapes", "prepare_image"],
        "lineage": ["INIT_EPOCHS", "INIT_LR", "init_settings", "load_init_weights", "parent_lineage", "record_lineage"],
        "loop": ["train"],
        "loss": ["dice_ce_loss"],
        "run_folder": ["CHECKPOINT_NAME", "LOCK_NAME", "default_out_dir", "load_checkpoint", "merge_resume_config", "read_checkpoint", "resolve_out_dir", "save_checkpoint", "training_summary", "write_metrics", "write_run_info"],
    },
)
