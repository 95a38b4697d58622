#!/usr/bin/env bash
# The benchmark (lnl_jax.bench) on one GPU, in at most ~6 minutes: JSON lines to $OUT/bench.jsonl.
#
# Needs jax (with CUDA), flax, optax and absl; TensorFlow is not needed. Where ml_collections is
# missing and the GPU machine has no package index, download its wheel beside the checkout first:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp -d .whl ml-collections==1.1.0        (.whl/ is git-ignored)
# and copy .whl/ with the checkout: the script installs it from there.
#
# Most important first (each run is its own process under `timeout`, and everything stops at the
# overall budget, so a slow compile costs only what comes after it):
#   1. bfloat16, loop, batch 256: train + eval step, with the matmul/conv ceilings (batch 128 if
#      256 fails other than by timing out; the CPU's memory analysis says ~36 GB at 256 in float32)
#   2. float32,  loop, batch 64:  train step
#   3. bfloat16, batch 64: the loop, vmap and scan executions, one process each
#   4. bfloat16, batch 64: --parts (each ensemble execution vs one shared member network on the
#      16× batch, the U-Net, the whole loss gradient without the optimiser)
#   5. float32,  loop, batch 256
#   6. bfloat16, batch 64: --layers (each convolution alone in each lowering of models/conv.py;
#      the GPU takes 'xla' by default, the CPU lowerings have never run on one)
# then the projected time of the paper's RAF-DB schedule (12,271 images × 24 epochs) at the best
# measured train img/s. Overrides: BENCH_RUNS (a subset of the run names, in the order above:
# "bf16-big f32-small bf16-loop bf16-vmap bf16-scan parts f32-big layers"), BENCH_BUDGET_S,
# BENCH_BIG, BENCH_SMALL, BENCH_STEPS, BENCH_EXTRA (more flags for every run, e.g.
# --config.model.width=0.0625).
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-./bench_out}
mkdir -p "$OUT"
LOG=$OUT/bench.jsonl
ERR=$OUT/stderr.log
: >"$LOG"
: >"$ERR"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
BUDGET=${BENCH_BUDGET_S:-330}
BIG=${BENCH_BIG:-256}
SMALL=${BENCH_SMALL:-64}
STEPS=${BENCH_STEPS:-10}
read -r -a EXTRA <<<"${BENCH_EXTRA:-}"
RUNS=${BENCH_RUNS:-bf16-big f32-small bf16-loop bf16-vmap bf16-scan parts f32-big layers}

if ! python3 -c 'import ml_collections' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

if command -v nvidia-smi >/dev/null; then
  smi=$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
        --format=csv,noheader 2>&1 | head -1)
  printf '{"what": "nvidia-smi", "gpu": "%s"}\n' "${smi//\"/}" | tee -a "$LOG"
fi

# bench LIMIT_S NAME FLAGS...: one benchmark process, cut at LIMIT_S or the overall budget.
bench() {
  local limit=$1 name=$2 left
  shift 2
  left=$((BUDGET - SECONDS))
  ((left < limit)) && limit=$left
  if ((limit < 20)); then
    printf '{"what": "skipped", "run": "%s", "reason": "overall budget of %ss spent"}\n' \
      "$name" "$BUDGET" | tee -a "$LOG"
    return
  fi
  echo "=== $name (limit ${limit}s) ===" >>"$ERR"
  timeout -k 5 "$limit" python3 -m lnl_jax.bench --config=configs/raf.py --steps="$STEPS" \
    "${EXTRA[@]}" "$@" 2>>"$ERR" | tee -a "$LOG"
  local rc=$?
  if ((rc != 0)); then
    printf '{"what": "failed", "run": "%s", "rc": %d, "reason": "%s"}\n' "$name" "$rc" \
      "$( ((rc == 124 || rc == 137)) && echo "timed out after ${limit}s" || echo "see stderr.log")" \
      | tee -a "$LOG"
    tail -n 5 "$ERR" >&2
  fi
  return "$rc"
}

# want NAME: whether NAME is among $BENCH_RUNS (all of them by default).
want() { [[ " $RUNS " == *" $1 "* ]]; }

if want bf16-big; then
  bench 150 bf16-loop-$BIG --dtypes=bfloat16 --batch="$BIG" --ensembles=loop
  rc=$?
  if ((rc != 0 && rc != 124 && rc != 137)); then  # e.g. out of memory: half the batch
    bench 120 bf16-loop-$((BIG / 2)) --dtypes=bfloat16 --batch=$((BIG / 2)) --ensembles=loop
  fi
fi
want f32-small && bench 100 f32-loop-$SMALL --dtypes=float32 --batch="$SMALL" --ensembles=loop --noeval
for e in loop vmap scan; do
  want "bf16-$e" && bench 90 "bf16-$e-$SMALL" --dtypes=bfloat16 --batch="$SMALL" --ensembles="$e" --noeval
done
want parts && bench 120 "bf16-parts-$SMALL" --dtypes=bfloat16 --batch="$SMALL" \
  --ensembles=loop,vmap,scan --parts --notrain --noeval
want f32-big && bench 100 f32-loop-$BIG --dtypes=float32 --batch="$BIG" --ensembles=loop --noeval
want layers && bench 90 "bf16-layers-$SMALL" --dtypes=bfloat16 --batch="$SMALL" --layers --notrain \
  --noeval

python3 - "$LOG" <<'EOF' | tee -a "$LOG"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
steps = [r for r in rows if r.get('what') == 'train_step']
for r in steps:
  print(f"# {r['dtype']:9s} {r['ensemble']:5s} batch {r['batch']:4d}: {r['img_per_s']:8.1f} img/s, "
        f"{(r.get('flop_per_s') or 0) / 1e12:6.1f} TFLOP/s, of matmul {r.get('frac_of_matmul')}, "
        f"compile {r['compile_s']} s", file=sys.stderr)
if steps:
  best = max(steps, key=lambda r: r['img_per_s'])
  seconds = 12271 * 24 / best['img_per_s']
  print(json.dumps(dict(what='projection', schedule='RAF-DB 12,271 images x 24 epochs, train steps only',
                        img_per_s=best['img_per_s'], dtype=best['dtype'], ensemble=best['ensemble'],
                        batch=best['batch'], minutes=round(seconds / 60, 2))))
EOF
echo "total ${SECONDS}s" >&2
