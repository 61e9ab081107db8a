"""Scoring (AP, mIoU, the benchmark's export and views) of predictions, a model and a checkpoint."""
