#!/usr/bin/env bash
# Reproduce results/sr_short/ and results/det_short/: short CPU runs of super-resolution (EDSR-tiny x2 on
# scikit-image photos) and detection (FCOS-ResNet18 on Fashion-MNIST canvases) at W/A/G 8/8/8 and 4/4/4 with the
# minmax and lbt gradient quantizers, plus full precision. Small on purpose: minutes, not hours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SR="task=super_resolution name=sr_short optim.epochs=10 progress=false log_every=8"
DET="task=detection name=det_short data.num_train=640 data.num_test=160 optim.epochs=1 progress=false log_every=5"
$PY train.py -m $SR bits=8,4 quant/grad=minmax,lbt
$PY train.py -m $SR quant=fp32
$PY train.py -m $DET bits=8,4 quant/grad=minmax,lbt
$PY train.py -m $DET quant=fp32
$PY scripts/table.py --name sr_short
$PY scripts/table.py --name det_short
$PY scripts/plot.py --name sr_short --bits 4/4/4
$PY scripts/plot.py --name det_short --bits 4/4/4
