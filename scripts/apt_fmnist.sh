#!/usr/bin/env bash
# Reproduce results/apt_fmnist/ (docs/methods.md §4, README "APT"): ResNet-20 from scratch on all of Fashion-MNIST,
# 3 epochs, compiled, seeds 0-2: FP32, fixed int8 (APT's format pinned at 8 bits, every role rounded to nearest) and
# APT (8 -> 16 -> 24 where diff_bit asks for it); then the table, the figures (bits per layer and role over
# training, the bit-weighted cost) and report.md (accuracy beside cost and bits). Two streams side by side, one
# thread each (about 70 minutes on 2 cores). Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=apt_fmnist progress=false threads=1"
{ $PY train.py -m $ARGS quant=apt seed=0,1,2
  $PY train.py -m $ARGS quant=fp32 seed=0,1; } &
{ $PY train.py -m $ARGS quant=apt "quant.precision.candidates=[8]" seed=0,1,2
  $PY train.py -m $ARGS quant=fp32 seed=2; } &
wait
$PY scripts/table.py --name apt_fmnist --command "bash scripts/apt_fmnist.sh"
$PY scripts/plot.py --name apt_fmnist --bits apt8-24
$PY scripts/apt_report.py --name apt_fmnist --out results/apt_fmnist/report.md
