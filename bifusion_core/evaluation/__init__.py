"""evaluation stage of the bifusion pipeline."""
