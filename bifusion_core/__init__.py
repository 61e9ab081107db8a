"""bifusion: 2D-3D fusion for 3D instance and semantic segmentation of RGB-D scans.

Pipeline, one sub-package per stage: ``data`` (raw scans -> prepared samples),
``features`` (CLIP features), ``models``, ``losses``, ``engine`` (training), ``evaluation``.
``config`` holds the preset schema shared by all of them.
"""

__version__ = "0.1.0"
