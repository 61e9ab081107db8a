"""engine stage of the bifusion pipeline."""
