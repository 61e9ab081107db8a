"""losses stage of the bifusion pipeline."""
