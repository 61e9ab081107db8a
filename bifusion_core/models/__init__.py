"""models stage of the bifusion pipeline."""
