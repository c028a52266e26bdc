"""Networks, the model folder (bundle: weights + model.json), a model loaded for inference.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "bundle": ["CONFIG_NAME", "ModelConfig", "SCREEN_WEIGHTS_NAME", "WEIGHTS_NAME", "load_bundle", "load_screen_bundle", "read_model_config", "save_bundle", "save_screen", "write_model_config"],
        "calibration": ["Calibration"],
        "loaded": ["LoadedModel", "ScreenModel", "compile_model", "load_model", "load_screen"],
        "memory": ["forward_bytes"],
        "networks": ["DEFAULT_ARCH", "IMAGENET_MEAN", "IMAGENET_STD", "UNet", "build_model", "check_input_size", "input_multiple", "normalize_arch"],
    },
)
