#!/usr/bin/env bash
# Reproduce results/nce_fmnist/: NCE (docs/methods.md §2) on Fashion-MNIST ResNet-20 at W/A/G 2/2/8.
# 1. search the inner widths under a budget of the original network's MACs and params (seed 0), which writes
#    configs/model/nce_fmnist_resnet20.yaml;  2. retrain original and found networks from scratch, seeds {0, 1};
# 3. the table (with MACs and params) and the figure of the found widths per layer. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=nce_fmnist progress=false threads=1"
FOUND=nce_fmnist_resnet20
$PY train.py $ARGS search=nce name=nce_fmnist_search seed=0 optim.epochs=3 search.warmup_epochs=1 search.lr=0.05 \
    search.check_every=10 search.export_name=$FOUND
$PY train.py -m $ARGS model=resnet20,$FOUND seed=0,1
$PY scripts/nce_report.py --search nce_fmnist_search --name nce_fmnist
