#!/usr/bin/env bash
# Reproduce results/trs_fmnist/: ResNet-20 on Fashion-MNIST at W/A/G 2/2/32, SGD vs SGDT and AdamW vs AdamT x seeds
# {0, 1} (TRS, docs/methods.md §3); then the table and the figures (target vs measured transition rate, U_t).
# The runs are 94 steps long: the running rate uses momentum 0.9 (paper: 0.99) and eta is 10x the configs' default
# (U_0 / (10 lambda_)), so that U_t can respond within a run. The SGD and the Adam family run side by side, one
# thread each (about 30 minutes on 2 shared cores). Re-running skips finished runs.
# LBT444=1 adds W/A/G 4/4/4 with LBT gradient intervals, seed 0 only (about 20 more minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=trs_fmnist progress=false threads=1"
SGDT="optim=sgdt optim.trs.eta=2.0 optim.trs.momentum=0.9"
ADAMT="optim=adamt optim.trs.eta=0.02 optim.trs.momentum=0.9"
{ $PY train.py -m $ARGS optim=sgd seed=0,1
  $PY train.py -m $ARGS $SGDT seed=0,1; } &
{ $PY train.py -m $ARGS optim=adamw seed=0,1
  $PY train.py -m $ARGS $ADAMT seed=0,1; } &
wait
if [ "${LBT444:-0}" = 1 ]; then
  B444="quant.bits.w=4 quant.bits.a=4 quant.bits.g=4 quant/grad=lbt seed=0"
  { $PY train.py -m $ARGS $B444 optim=sgd
    $PY train.py -m $ARGS $B444 $SGDT; } &
  { $PY train.py -m $ARGS $B444 optim=adamw
    $PY train.py -m $ARGS $B444 $ADAMT; } &
  wait
  $PY scripts/plot.py --name trs_fmnist --bits 4/4/4
fi
$PY scripts/table.py --name trs_fmnist
$PY scripts/plot.py --name trs_fmnist --bits 2/2/32
