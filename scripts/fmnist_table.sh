#!/usr/bin/env bash
# Reproduce results/fmnist_table/: ResNet-20 on Fashion-MNIST, quantizers {minmax, mse, lbt} x W/A/G {4/4/4, 8/8/8}
# x seeds {0, 1}, plus the FP32 and APT rows; then the table and the figures. About 20 minutes on 2 CPU cores.
# Re-running skips finished runs and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY train.py -m experiment=fmnist_table bits=4,8 quant/grad=minmax,mse,lbt seed=0,1 progress=false
$PY train.py -m experiment=fmnist_table quant=fp32 seed=0,1 progress=false
$PY train.py -m experiment=fmnist_table quant=apt seed=0,1 progress=false     # APT, docs/methods.md §4
$PY scripts/table.py --name fmnist_table
$PY scripts/plot.py --name fmnist_table --bits 4/4/4
$PY scripts/plot.py --name fmnist_table --bits 8/8/8
$PY scripts/plot.py --name fmnist_table --bits apt8-24   # bits per layer over training, cost
