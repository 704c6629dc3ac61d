#!/usr/bin/env bash
# Reproduce results/trs_fmnist/: ResNet-20 on Fashion-MNIST at W/A/G 2/2/32, SGD vs SGDT and AdamW vs AdamT x seeds
# {0, 1} (TRS, docs/methods.md §3); then the table and the figures (target vs measured transition rate, U_t).
# The run is 141 steps long: the running rate uses momentum 0.9 (paper: 0.99) and eta is 10x the configs' default
# (U_0 / (10 lambda_)), so that U_t can respond within the run. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=trs_fmnist progress=false threads=${THREADS:-2}"
$PY train.py -m $ARGS optim=sgd,adamw seed=0,1
$PY train.py -m $ARGS optim=sgdt optim.trs.eta=2.0 optim.trs.momentum=0.9 seed=0,1
$PY train.py -m $ARGS optim=adamt optim.trs.eta=0.02 optim.trs.momentum=0.9 seed=0,1
$PY scripts/table.py --name trs_fmnist
$PY scripts/plot.py --name trs_fmnist --bits 2/2/32
