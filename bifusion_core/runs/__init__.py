"""A run folder read back: the trained model (``restore``) and what training logged (``report``)."""
