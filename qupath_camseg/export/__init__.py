"""The model as a QuPath pixel classifier (ONNX/TorchScript + classifier JSON).

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "onnx": ["INPUT_NAME", "ONNX_OPSET", "OPENCV_SAFE_OPS", "OUTPUT_NAME", "ProbabilityModel", "check_onnx_graph", "export_onnx", "export_torchscript"],
        "pixel_classifier": ["BACKGROUND_CLASS", "BACKGROUND_COLOR", "MICROMETER", "build_pixel_classifier", "model_path_from_classifier", "qupath_tiled_predict", "set_model_uri"],
        "pixel_classifier_check": ["validate_pixel_classifier"],
        "qupath_export": ["CLASSIFIER_DIR", "DEFAULT_PADDING_PX", "QuPathExport", "export_qupath", "install_into_project", "project_folder"],
    },
)
