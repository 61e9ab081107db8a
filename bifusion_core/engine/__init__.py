"""Training: the ``Trainer`` and its callbacks, checkpoints, precision, ranks, and the checks before a long job."""
