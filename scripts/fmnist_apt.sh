#!/usr/bin/env bash
# Reproduce results/fmnist_apt/: APT (docs/methods.md §3) against fixed bit-widths on ResNet-20 / Fashion-MNIST,
# the recipe of experiment fmnist_table (3 epochs, first 6k training images), seeds {0, 1}:
#   apt8-24  APT, bits adapt among 8/16/24 per layer and role
#   apt8     the APT format pinned at 8 bits (candidates [8]): the same quantizer without the adaptation
#   8/8/8    the project's fixed point (learnable W/A intervals, min-max gradient clipping)
#   4/4/4    LBT, for context;  fp32
# Re-running skips finished runs and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=fmnist_table name=fmnist_apt seed=0,1 progress=false threads=${THREADS:-2}"
$PY train.py -m $ARGS quant=apt
$PY train.py -m $ARGS quant=apt 'quant.precision.candidates=[8]'
$PY train.py -m $ARGS bits=8 quant/grad=minmax
$PY train.py -m $ARGS bits=4 quant/grad=lbt
$PY train.py -m $ARGS quant=fp32
$PY scripts/table.py --name fmnist_apt
$PY scripts/plot.py --name fmnist_apt --bits apt8-24
