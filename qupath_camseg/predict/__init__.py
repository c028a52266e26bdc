"""Whole-slide inference: tile plan and chunk store, tile readers, the model over tiles with
blending, and the QuPath objects, heatmap and report written from the blended map.

The loaded model (``LoadedModel``, ``load_model``, ``compile_model``) lives in
:mod:`qupath_camseg.model.loaded`.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

from qupath_camseg._compat import moved_names as _moved_names

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "blending": ["BandWriter", "ChunkFill", "StripeAccumulator", "blend_window"],
        "cascade": ["Cascade", "ScreenPass", "cascade_key", "context_px", "examined_tiles", "plan_cascade", "run_screen"],
        "chunks": ["ChunkStore", "TilePlan"],
        "inference": ["InferenceStats", "run_inference"],
        "objects": ["BACKGROUND_CLASS", "build_objects", "measure_tile_px"],
        "options": ["PredictOptions", "PredictResult", "Progress", "ProgressEvent", "no_progress"],
        "project": ["predict_project"],
        "report": ["finished_report", "read_report", "settings_key", "store_key"],
        "roi": ["active_tiles", "check_roi_on_slide", "read_roi", "tissue_area_mm2"],
        "run_lock": ["run_lock"],
        "slide": ["predict_slide"],
        "stain": ["STAIN_NORM_CHOICES", "SlideStain", "check_stain_norm", "slide_stain"],
        "suggestions": ["RANK_KEY", "REVIEW_CLASS", "REVIEW_NAME", "UNCERTAINTY_KEY", "chunk_uncertainty", "review_objects", "suggestion_sizes"],
        "regions": ["ChunkRegions", "Seam", "chunk_regions", "resolve_seams", "trace_selected"],
        "screen_calibrate": ["CalibrationSlide", "calibrate_screen", "choose_threshold"],
        "summaries": ["ChunkSummaries", "ChunkSummary", "summarize_chunk"],
        "tissue_source": ["TISSUE_MODES", "load_tissue", "resolve_tissue", "tissue_annotation", "tissue_key"],
        "tile_reader": ["BLOCK_CACHE_BYTES", "BlockCache", "PREFETCH_BATCHES", "ReaderArgs", "TileBatches", "TileReader", "thread_batches", "use_read_processes"],
    },
)
__getattr__ = _moved_names(__name__, __getattr__, dict.fromkeys(("LoadedModel", "compile_model", "load_model"), "model"))
