"""``python -m bifusion_cli`` (what ``torchrun --nproc_per_node N -m bifusion_cli train ...`` starts)."""

from .app import main

main()
