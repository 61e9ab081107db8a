"""The performance suite's figures P1–P8, one module each, run by ``bench/suite.py``.

Each module is a script: ``python bench/perf/<module>.py --json OUT [--device cpu|cuda]
[--work DIR]``. It measures both sides of its ratio in the same process, back to back, and
writes a JSON list of figure rows (see ``common.Figure``). The suite runs the modules one after
another, each in its own process, so no two measurements share the 2 cores or the page cache.
"""
