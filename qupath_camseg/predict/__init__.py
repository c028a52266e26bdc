"""Whole-slide inference: tile plan and chunk store, tile readers, the model over tiles with
blending, and the QuPath objects, heatmap and report written from the blended map.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "blending": ["StripeAccumulator", "blend_window", "run_inference"],
        "chunks": ["ChunkStore", "TilePlan"],
        "outputs": ["BACKGROUND_CLASS", "ChunkSummaries", "ChunkSummary", "build_objects", "summarize_chunk"],
        "slide": ["LoadedModel", "PredictOptions", "PredictResult", "load_model", "predict_project", "predict_slide", "read_roi"],
        "tile_reader": ["BLOCK_CACHE_BYTES", "BlockCache", "PREFETCH_BATCHES", "TileBatches", "TileReader", "thread_batches", "use_read_processes"],
    },
)
