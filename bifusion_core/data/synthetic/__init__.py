"""Synthetic ScanNet scans: small furnished rooms written in the exact raw ScanNet layout, so the whole
pipeline (prepare, train, evaluate) runs end to end in tests and demos through the same readers as
real scans.

``catalogue`` (what a room may hold: categories, prints), ``shapes`` (meshes of the furniture),
``room`` (one scene: objects placed in a room, cameras, ``synthetic_scene``), ``render`` (ray-cast
views, one sensor frame) and ``write`` (the raw files: mesh, annotations, frames as exported folders
or ``.sens``, label table, split lists: ``write_synthetic_scannet``).
"""
