#!/bin/bash
# Issue 24 on one GPU: the SSM synthetic-task table over seeds (experiments/ssm_table.py).
#
#   run(command="bash benchmarks/gpu_ssm_table.sh", timeout_s=480)     (carry .whl if the wheels live there)
#   knobs (environment): ROWS=all SEEDS=0,1,2,3,4 WORKERS=12 STEPS_SCALE=1 COMMIT=<sha>
#   PREV=<tgz to resume> SCAN=chunked
#
# SCAN sets model.scan_method for every run: the ind256_*, mqar_*, listops128_* presets use "ref",
# the fastest back-end on a CPU at L <= 256, which on a GPU is one while-loop iteration per token; the back-ends agree
# to float tolerance (tests/ssm/test_scan.py), so a GPU row is the preset's up to that rounding.
#
# 80 runs in priority order (selective copying 5 models x 5 seeds, induction heads 4 x 5, MQAR
# 4 x 5, ListOps 3 x 5) on 12 processes sharing the GPU. Wall budget: no run starts after 230 s,
# runs still going at 310 s are killed (recorded as timeouts), the sweep process itself is
# stopped at 340 s, the table is rebuilt from whatever finished (<= 60 s), then packed: ~6.5 min.
# The results are written outside $OUT (a run writes hundreds of files and only 8 come back) and
# packed into these 8 files:
#   $OUT/table.md  table.json (the PNGs are in the tarball)
#   $OUT/ssm_table.tgz  (everything but checkpoints, TensorBoard files and the compile cache)
#   $OUT/ssm_table.log  (the sweep's progress lines and the aggregation's output)
set -u
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} TF_CPP_MIN_LOG_LEVEL=2
t0=$(date +%s)
el() { echo "[+$(($(date +%s) - t0))s] $*"; }
LOG="$OUT/ssm_table.log"
R=/tmp/ssm_table
ROWS=${ROWS:-all}
SEEDS=${SEEDS:-0,1,2,3,4}
WORKERS=${WORKERS:-12}
STEPS_SCALE=${STEPS_SCALE:-1}
SCAN=${SCAN:-chunked}
# A second call resumes: carry the first call's ssm_table.tgz in .ssm_table_prev/ and the runs
# that finished there are reused (their summary.json is in it); the rest run from the start.
PREV=${PREV:-.ssm_table_prev/ssm_table.tgz}
# The copied tree may have no .git: then pass COMMIT=<sha> so that the table names its commit
# (empty: the table asks git).
COMMIT=${COMMIT:-}
# Wall budget (s): no launch after BUDGET_S, runs killed at DEADLINE_S, sweep stopped at KILL_S.
BUDGET_S=${BUDGET_S:-230}
DEADLINE_S=${DEADLINE_S:-310}
KILL_S=${KILL_S:-340}
AGG_S=${AGG_S:-60}

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
el installed | tee -a "$LOG"
python3 -c "import jax, flax, optax, orbax.checkpoint, chex, ml_collections, absl, tqdm, \
tensorboardX, matplotlib, scipy; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -3 | tee -a "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
echo "COMMIT='$COMMIT'; git: $(git rev-parse HEAD 2>&1 | head -1)" | tee -a "$LOG"

if [ -f "$PREV" ]; then tar -xzf "$PREV" -C /tmp && el "resumed from $PREV" | tee -a "$LOG"; fi
mkdir -p "$R"

el "sweep" | tee -a "$LOG"
timeout -s TERM "$KILL_S" python3 -m experiments.ssm_table --rows "$ROWS" --seeds "$SEEDS" \
  --workers "$WORKERS" --out "$R" --budget_s "$BUDGET_S" --deadline_s "$DEADLINE_S" --timeout_s "$DEADLINE_S" \
  --steps_scale "$STEPS_SCALE" --commit "$COMMIT" --set "model.scan_method=$SCAN" >"$R.out" 2>&1
rc=$?
grep '^\[ssm_table' "$R.out" | tee -a "$LOG"
el "sweep rc=$rc" | tee -a "$LOG"
if [ "$rc" -ne 0 ] || [ ! -f "$R/table.md" ]; then
  tail -40 "$R.out" >>"$LOG"
  el "aggregating what finished" | tee -a "$LOG"
  timeout "$AGG_S" python3 -m experiments.ssm_table --rows "$ROWS" --seeds "$SEEDS" --out "$R" \
    --steps_scale "$STEPS_SCALE" --commit "$COMMIT" --aggregate_only >"$R.agg" 2>&1
  el "aggregate rc=$?" | tee -a "$LOG"
  tail -5 "$R.agg" >>"$LOG"
fi
cat "$R/table.md" >>"$LOG" 2>/dev/null
cp "$R"/table.json "$R"/table.md "$OUT"/ 2>>"$LOG"  # the PNGs travel in the tarball
cp "$R.out" "$R/sweep.out" 2>/dev/null
tar -czf "$OUT/ssm_table.tgz" -C /tmp --exclude=checkpoints --exclude=tb --exclude=jax_cache \
  ssm_table 2>>"$LOG"
ls -la "$OUT" | tee -a "$LOG"
el done | tee -a "$LOG"
