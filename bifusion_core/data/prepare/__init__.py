"""Preparation: raw scans → ``DATA/<mode>/`` samples (one ``.npz`` + one JPEG per frame), ``manifest.json`` and ``gt/``."""
