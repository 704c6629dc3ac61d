#!/usr/bin/env bash
# Reproduce results/trs_fmnist/ (docs/methods.md §3, README "TRS"): first the full-precision ResNet-20 that every run
# starts from (experiment=fmnist_fp_pretrain), then QAT at W2A2 on the signed 4-level weight grid with FP gradients:
# SGD vs SGDT and Adam vs AdamT, seeds 0-2, 4 epochs each; then the table and the figures (target vs running
# transition rate, U_t, distance of the latent weights to the nearest transition point) and dynamics.md (accuracy
# before/after, the transition statistics early and late: scripts/trs_report.py). The SGD and the Adam family
# run side by side, one thread each (about 80 minutes on 2 cores). Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
$PY train.py experiment=fmnist_fp_pretrain progress=false
ARGS="experiment=trs_fmnist progress=false threads=1 seed=$SEEDS"
{ $PY train.py -m $ARGS optim=sgd
  $PY train.py -m $ARGS optim=sgdt; } &
{ $PY train.py -m $ARGS optim=adam
  $PY train.py -m $ARGS optim=adamt; } &
wait
$PY scripts/table.py --name trs_fmnist --command "bash scripts/trs_fmnist.sh"
$PY scripts/plot.py --name trs_fmnist --bits 2/2/32
$PY scripts/trs_report.py --name trs_fmnist --out results/trs_fmnist/dynamics.md
# The controller's gain at 10x eta = U_0 (name=trs_fmnist_gain10): does a faster U_t follow the target in a run
# this short? About 35 more minutes.
if [ "${GAIN10:-1}" = 1 ]; then
  G="experiment=trs_fmnist progress=false threads=1 seed=$SEEDS name=trs_fmnist_gain10"
  $PY train.py -m $G optim=sgdt optim.trs.eta=1.0 &
  $PY train.py -m $G optim=adamt optim.trs.eta=0.01 &
  wait
  $PY scripts/table.py --name trs_fmnist_gain10 --command "bash scripts/trs_fmnist.sh"
  $PY scripts/plot.py --name trs_fmnist_gain10 --bits 2/2/32
  $PY scripts/trs_report.py --name trs_fmnist_gain10 --out results/trs_fmnist_gain10/dynamics.md
fi
