#!/usr/bin/env bash
# GPU checks of issue 14 (adarl paper presets on one GPU). Run from the repository root:
#
#   OUT=/some/dir PYTHONPATH=$PWD bash benchmarks/gpu_adarl.sh
#
# 1. gpu_smoke: the hopper pipeline (MJX, OMPO schedule, AdaRL truncations, robustness grid),
#    2 seeds x 128 envs, 20 updates; on an H200: 54 s compile, then 0.41 s per update.
# 2. the paper's hopper preset (5 seeds x 80 envs, 80 gradient steps per env step of 80 envs),
#    cut to PAPER_UPDATES updates of 4000 env + 4000 gradient steps per seed, capped at 3 min.
# Each prints the memory estimate before starting, then (even when killed by its timeout, from
# the updates logged so far) the steady-state env steps/s and gradient steps/s: median over
# updates after the first, which includes compilation (adarl.footprint.throughput).
#
# Knobs (environment): PYTHON (python3), SMOKE_PRESET (gpu_smoke), PAPER_PRESET (hopper),
# PAPER_UPDATES (6), SMOKE_LIMIT_S (300), PAPER_LIMIT_S (180), EXTRA (overrides added to both
# commands). CPU dry run of the script itself (about 15 min on 2 shared cores, all compile):
#   OUT=/tmp/gpu_dry PYTHONPATH=$PWD SMOKE_PRESET=smoke PAPER_PRESET=smoke SMOKE_LIMIT_S=500 \
#     PAPER_LIMIT_S=500 EXTRA="--config.train.num_updates=3 --config.eval.grid_scales=(1.0,)" \
#     bash benchmarks/gpu_adarl.sh
set -u
: "${OUT:?set OUT to the output directory}"
PY=${PYTHON:-python3}
SMOKE_PRESET=${SMOKE_PRESET:-gpu_smoke}
PAPER_PRESET=${PAPER_PRESET:-hopper}
PAPER_UPDATES=${PAPER_UPDATES:-6}
SMOKE_LIMIT_S=${SMOKE_LIMIT_S:-300}
PAPER_LIMIT_S=${PAPER_LIMIT_S:-180}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"

"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"

run() {  # name limit_s preset [overrides...]
  local name=$1 limit=$2 preset=$3
  shift 3
  echo "=== $name: $preset, timeout ${limit}s ==="
  local t0=$SECONDS
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  timeout "$limit" "$PY" -m experiments.adarl --config "experiments/configs/adarl.py:$preset" \
    --workdir "$OUT/$name" "$@" $EXTRA
  echo "=== $name: exit code $? after $((SECONDS - t0)) s ==="
  "$PY" -c "from adarl import footprint; footprint.print_throughput('$OUT/$name')" 2>&1 |
    tail -n 1
}

run gpu_smoke "$SMOKE_LIMIT_S" "$SMOKE_PRESET"
run paper_hopper "$PAPER_LIMIT_S" "$PAPER_PRESET" \
  "--config.train.num_updates=$PAPER_UPDATES" --config.train.checkpoint_every=3 \
  --config.train.eval_every=0
