"""QuPath projects through two doors (QuPath's own files; paquo, imported lazily in one module)
and the installer of the Groovy scripts.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "paquo_project": ["PAQUO_API", "PaquoProject", "find_qupath_installation"],
        "project": ["FileProject", "ImageInfo", "ProjectEntry", "QUPATH_DEFAULT_CLASSES", "WRITTEN_QUPATH_VERSION", "argb_to_rgb", "create_project", "entry_image_path", "find_entry", "open_project", "path_to_uri", "read_image_info", "resolve_image", "rgb_to_argb", "uri_to_path"],
        "scripts": ["InstallResult", "default_scripts_dir", "install_scripts", "script_files", "scripts_source_dir"],
    },
)
