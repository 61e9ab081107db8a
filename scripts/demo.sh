#!/usr/bin/env bash
# The whole pipeline on synthetic ScanNet-format scenes, sized for 2 CPU cores:
# generate + prepare → precompute CLIP tokens → train BiFusion → evaluate untrained vs trained.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
DATA=${DEMO_DATA:-data/demo}
SCENES=${DEMO_SCENES:-64}
export PYTHONUNBUFFERED=1

if [ ! -f "$DATA/sv/manifest.json" ]; then
  "$BIN/bifusion" prepare --synthetic "$SCENES" --out "$DATA" --preset demo --seed 0
else
  echo "[demo] $DATA already prepared (make clean-demo to start over)"
fi
"$BIN/bifusion" validate --preset demo --data "$DATA"
"$BIN/bifusion" precompute-clip --preset demo --data "$DATA" --workers 1 --verify 4
"$BIN/bifusion" train --preset demo --data "$DATA" ${DEMO_ITERS:+--max-iters "$DEMO_ITERS"}
RUN=$(ls -td outputs/demo/*/ | head -1)
"$BIN/bifusion" eval "$RUN/checkpoints/init.pt" "$RUN" --data "$DATA" --export "$RUN/benchmark"
