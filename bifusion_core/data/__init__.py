"""data stage of the bifusion pipeline."""
