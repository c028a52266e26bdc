"""QuPath projects through two doors (QuPath's own files; paquo, imported lazily in one module)
and the installer of the Groovy scripts.

Modules: ``uris`` (image URIs ↔ paths), ``colors`` (packed ARGB, default classes), ``entries``
(:class:`ProjectEntry` and :class:`Project`, the interface both doors implement),
``image_info`` (what a project records about an image file), ``file_project`` (the QuPath-free
door), ``paquo_project`` (the paquo door), ``doors`` (:func:`open_project` picks one) and
``scripts`` (the Groovy scripts' installer).

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "colors": ["QUPATH_DEFAULT_CLASSES", "argb_to_rgb", "rgb_to_argb"],
        "doors": ["Door", "create_project", "open_project"],
        "entries": ["Project", "ProjectEntry", "entry_image_path", "find_entry"],
        "file_project": ["FileProject", "WRITTEN_QUPATH_VERSION"],
        "image_info": ["ImageInfo", "read_image_info"],
        "paquo_project": ["PAQUO_API", "PaquoProject", "find_qupath_installation"],
        "scripts": ["InstallResult", "default_scripts_dir", "install_scripts", "script_files", "scripts_source_dir"],
        "uris": ["path_to_uri", "resolve_image", "uri_to_path"],
    },
)
