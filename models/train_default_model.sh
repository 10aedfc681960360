#!/usr/bin/env bash
# Regenerates models/lwr4plus_j1-5_lstm.npz and its scores (see models/README.md).
# Run from the repository root with the virtual environment set up (`make setup`).
set -euo pipefail
INVDYN=${INVDYN:-.venv/bin/invdyn}
WORK=${WORK:-$(mktemp -d)}
JOINTS=lwr_a1_joint,lwr_a2_joint,lwr_e1_joint,lwr_a3_joint,lwr_a4_joint
# 12 runs x 60 s at 1 kHz, flasks of 200/300/400 ml, seeds 0..11.
$INVDYN data sim --out "$WORK/train" --seconds 60 --seed 0 \
    --payload-ml 200 300 400 200 300 400 200 300 400 200 300 400
# An unseen run for the model card's test score (seed 99, 300 ml, 20 s).
$INVDYN data sim --out "$WORK/test" --seconds 20 --seed 99 --payload-ml 300
$INVDYN train --data "$WORK/train" --joints $JOINTS --hidden 64 --layers 1 \
    --window 100 --segment 2000 --batch 16 --epochs 40 --patience 6 --lr 0.05 --seed 0 \
    --out models/lwr4plus_j1-5_lstm.npz
$INVDYN eval --model models/lwr4plus_j1-5_lstm.npz --data "$WORK/test" \
    --json models/lwr4plus_j1-5_lstm.test.json
