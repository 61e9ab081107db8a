"""Data stages: ``raw`` (scans and recordings as recorded) → ``prepare`` (prepared samples) →
``loading`` (model inputs), the ``synthetic`` scan generator, and the label sets every stage shares
(``labels``)."""
