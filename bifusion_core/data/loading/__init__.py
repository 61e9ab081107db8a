"""Loading prepared samples for training and evaluation: datasets, per-point targets, batching."""
