#!/usr/bin/env bash
# Reproduce results/nce_fmnist/: NCE (docs/methods.md §2) on Fashion-MNIST ResNet-20, W2A2 (4-level weights), FP
# gradients, compiled. 1. search the widths at a budget of 1.0x the original network's MACs and params (seed 0;
# TAS's mechanism, search.* defaults but a larger logit lr for a 3-epoch search), which writes
# configs/model/nce_fmnist_resnet20.yaml; 2. retrain found and original from scratch, seeds 0-2, 3 epochs, the
# original beside the search, one thread each (about 50 minutes on 2 cores); 3. the table (MACs, params, widths)
# and the figures. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
ARGS="experiment=nce_fmnist progress=false threads=1"
FOUND=nce_fmnist_resnet20
{ $PY train.py $ARGS search=nce name=nce_fmnist_search seed=0 search.warmup_epochs=1 search.lr=0.05 \
      search.check_every=10 search.export_name=$FOUND
  $PY train.py -m $ARGS model=$FOUND seed=$SEEDS; } &
$PY train.py -m $ARGS model=resnet20 seed=$SEEDS &
wait
$PY scripts/nce_report.py --search nce_fmnist_search --name nce_fmnist
