#!/usr/bin/env bash
# Reproduce results/nce_fmnist/ and results/nce_fmnist_all/: NCE (docs/methods.md §2) on Fashion-MNIST ResNet-20,
# W2A2 (4-level weights), FP gradients, compiled. Each: 1. search the widths at a budget of 1.0x the original
# network's MACs and params (seed 0; TAS's mechanism, search.* defaults but a larger logit lr for a 3-epoch search),
# which writes configs/model/<found>.yaml; 2. retrain found and original from scratch, seeds 0-2, 3 epochs, the
# original beside the search, one thread each; 3. the table (MACs, params, widths) and the figures.
#   nce_fmnist:     the blocks' inner widths only (search.space=inner; its committed runs predate the key)
#   nce_fmnist_all: every width, the three residual stages as tied groups (search.space=all, the default)
# About 40 minutes each on 2 cores. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
ARGS="experiment=nce_fmnist progress=false threads=1"
SEARCH="search=nce seed=0 search.warmup_epochs=1 search.lr=0.05 search.check_every=10"
experiment() {  # name, found model name, extra search overrides
  { $PY train.py $ARGS $SEARCH name=$1_search search.export_name=$2 ${3:-}
    $PY train.py -m $ARGS name=$1 model=$2 seed=$SEEDS; } &
  $PY train.py -m $ARGS name=$1 model=resnet20 seed=$SEEDS &
  wait
  $PY scripts/nce_report.py --search $1_search --name $1
}
[ "${INNER:-1}" = 1 ] && experiment nce_fmnist nce_fmnist_resnet20 search.space=inner
experiment nce_fmnist_all nce_fmnist_all_resnet20
