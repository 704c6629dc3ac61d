#!/usr/bin/env bash
# Reproduce results/grad_baselines/ (docs/methods.md §1.10, issue 30): every gradient quantizer of the axis side by
# side on the fmnist_table protocol (ResNet-20, first 6k Fashion-MNIST training images, 3 epochs, tested on all
# 10k, compiled), seeds 0-2: min-max, fixed, MSE, LBT, in-hindsight, PSQ, BHQ and Unified INT8's DSGC at W4A4G4 and
# W8A8G8; at W8A8G8 also min-max on FP8 E5M2 instead of the integer grid (round-to-nearest-even, and stochastic);
# FP32. Then the table, the E(G)/E(G_L) figures and report and each policy's step time relative to min-max
# (scripts/bench_step.py, one run per bit-width). Two streams side by side, one thread each (about 65 minutes on 2
# cores, then about 15 for the benchmarks). Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="experiment=fmnist_table name=grad_baselines compile=true progress=false threads=1"
FP8="quant/grad=minmax quant.grad_format=fp8_e5m2"
{ $PY train.py -m $ARGS bits=4 quant/grad=minmax,fixed,mse,lbt seed=0,1,2
  $PY train.py -m $ARGS quant=fp32 seed=0,1,2
  $PY train.py -m $ARGS bits=8 quant/grad=minmax seed=0,1,2
  $PY train.py -m $ARGS bits=8 quant/grad=fixed,mse,lbt,hindsight seed=0,1,2
  $PY train.py -m $ARGS bits=8 $FP8 quant.grad_rounding=stochastic seed=0,1; } &
{ $PY train.py -m $ARGS bits=4 quant/grad=hindsight,psq,bhq,unified_int8 seed=0,1,2
  $PY train.py -m $ARGS bits=8 $FP8 seed=0,1,2
  $PY train.py -m $ARGS bits=8 quant/grad=psq,bhq,unified_int8 seed=0,1,2
  $PY train.py -m $ARGS bits=8 $FP8 quant.grad_rounding=stochastic seed=2; } &
wait
$PY scripts/table.py --name grad_baselines --command "bash scripts/grad_baselines.sh"
$PY scripts/plot.py --name grad_baselines --bits 4/4/4
$PY scripts/plot.py --name grad_baselines --bits 8/8/8
$PY scripts/grad_error_report.py --name grad_baselines --out results/grad_baselines/errors.md
$PY scripts/bench_step.py --bits 4 --policies minmax,fixed,mse,lbt,hindsight,psq,bhq,unified_int8 --rounds 3 \
    --steps 3 --out results/bench/cpu_grad_baselines.md
$PY scripts/bench_step.py --bits 8 --policies minmax,minmax+fp8_e5m2 --rounds 3 --steps 3 \
    --out results/bench/cpu_grad_formats.md
