"""Annotations as objects (:class:`QPObject`), QuPath GeoJSON read/write/validate, Camelyon
ASAP XML, and polygons ↔ rasters.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "fingerprint": ["FINGERPRINT_KEY", "fingerprint_matches", "fingerprint_neighbours", "shape_fingerprint"],
        "asap": ["EXCLUSION_GROUPS", "POSITIVE_GROUPS", "read_asap_xml", "write_asap_xml"],
        "geojson": ["objects_to_geojson", "write_geojson"],
        "geojson_read": ["read_geojson"],
        "geojson_validate": ["RULES", "validate_qupath_geojson"],
        "masks": ["IGNORE_LABEL", "is_ignore_class", "label_mask", "rasterize", "vectorize"],
        "objects": ["CAMSEG_METADATA", "OBJECT_TYPES", "OUR_NAME_PREFIX", "QPObject", "TISSUE_CLASS", "clip_to_slide", "copy_object", "default_class_color", "has_our_marker", "is_edited", "is_ours", "is_tissue_class", "iter_objects", "polygonal_part"],
    },
)
