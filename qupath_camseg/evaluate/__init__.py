"""Scores against the annotations (pixel Dice/IoU, Camelyon16 FROC, slide AUC), lesion
detections and figures.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

from qupath_camseg._compat import moved_names as _moved_names

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "auc": ["roc_auc"],
        "calibration": ["DEFAULT_BINS", "HeatmapCalibration", "ReliabilityBins", "heatmap_calibration", "reliability_bins"],
        "detections": ["Detection", "detect_lesions", "read_detections_csv", "slide_score", "write_detections_csv"],
        "figures": ["PREDICTION_COLOR", "TRUTH_COLOR", "froc_figure", "read_history", "reliability_figure", "save_figure", "seed_figure", "training_curve_figure"],
        "lesion_froc": ["FP_RATES", "FROCResult", "SlideFROC", "froc", "froc_curve", "froc_score", "match_detections"],
        "lesion_mask": ["CAMELYON16_LEVEL", "CAMELYON16_MPP", "DILATION_UM", "EvaluationMask", "ITC_MAJOR_AXIS_UM", "default_eval_downsample", "evaluation_mask", "evaluation_mask_from_polygons"],
        "pixels": ["PixelCounts", "pixel_counts", "polygon_pixel_counts", "pooled_counts"],
        "project": ["ProjectEvaluation", "SlideEvaluation", "evaluate_project"],
        "project_figure": ["project_seed_figure"],
        "sources": ["TUMOR_CLASS_NAMES"],
    },
)
__getattr__ = _moved_names(__name__, __getattr__, {"read_heatmap": "wsi"})
