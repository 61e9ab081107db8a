"""features stage of the bifusion pipeline."""
