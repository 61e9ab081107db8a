#!/usr/bin/env bash
# The whole pipeline on synthetic ScanNet-format scenes, sized for 2 CPU cores:
# generate + prepare (single frames and frame sequences) → precompute CLIP tokens → train BiFusion
# on single frames → fine-tune on 4-frame windows (merge + box heads) → evaluate untrained vs trained,
# frame by frame and online: every val scan streamed frame by frame, merged and scored on its mesh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
DATA=${DEMO_DATA:-data/demo}
SCENES=${DEMO_SCENES:-128}
OUT=${DEMO_OUTPUTS:-outputs}
export PYTHONUNBUFFERED=1

if [ ! -f "$DATA/sv/manifest.json" ] || [ ! -f "$DATA/mv/manifest.json" ]; then
  "$BIN/bifusion" prepare --synthetic "$SCENES" --out "$DATA" --preset demo --mode both --seed 0
else
  echo "[demo $((SECONDS / 60))m$((SECONDS % 60))s] $DATA already prepared (make clean-demo to start over)"
fi
"$BIN/bifusion" validate --preset demo --data "$DATA"
"$BIN/bifusion" precompute-clip --preset demo --data "$DATA" --workers 1 --verify 4

echo "[demo $((SECONDS / 60))m$((SECONDS % 60))s] 1/2 single-view training (preset demo)"
"$BIN/bifusion" train --preset demo --data "$DATA" --output-dir "$OUT" ${DEMO_ITERS:+--max-iters "$DEMO_ITERS"}
SV_RUN=$(ls -td "$OUT"/demo/*/ | head -1)
echo "[demo $((SECONDS / 60))m$((SECONDS % 60))s] 2/2 multi-view fine-tuning (preset demo-mv, from $SV_RUN)"
"$BIN/bifusion" train --preset demo-mv --data "$DATA" --output-dir "$OUT" --init-from "$SV_RUN" ${DEMO_MV_ITERS:+--max-iters "$DEMO_MV_ITERS"}
MV_RUN=$(ls -td "$OUT"/demo-mv/*/ | head -1)

echo "[demo $((SECONDS / 60))m$((SECONDS % 60))s] frame-level evaluation (protocol: frame), untrained vs trained"
"$BIN/bifusion" eval "$SV_RUN/checkpoints/init.pt" "$SV_RUN" --data "$DATA" --export "$SV_RUN/benchmark"
echo "[demo $((SECONDS / 60))m$((SECONDS % 60))s] online scene-level evaluation (protocols: mesh-vertex+segments, observed-points), untrained vs trained single-view vs multi-view"
"$BIN/bifusion" eval "$SV_RUN/checkpoints/init.pt" "$SV_RUN" "$MV_RUN" --online --data "$DATA" --export "$MV_RUN/benchmark-online"
echo "[demo] done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
