#!/bin/bash
# One session on a lent GPU, within a wall-time budget (Table 6 on the JPEG
# copy of CIFAR-10, then the GPU benchmark rows of issue 13):
#
#   bash experiments/gpu_session.sh SECONDS OUT_DIR DATA_DIR [DEPTH] [RUNS] \
#     [RESUME.tgz]
#
# DATA_DIR holds train/<class>/*.jpg (the unzipped JPEG copy). Steps:
# 1. a smoke run of the image-folder path with 2 runs (fails fast);
# 2. the paper's full recipe for ResNet-DEPTH (default 20), RUNS (default 3)
#    seeds as runs of one program (looped, config.vectorize_runs=False), float32 under JAX's default precision
#    (TF32 on the GPU), 45k/5k split. If it would overrun the budget it gets
#    SIGTERM, saves a checkpoint and stops: OUT_DIR/<workdir>.tgz then
#    resumes in a later session, given as RESUME.tgz (bit-identical, see
#    train.py);
# 3. benchmark rows (experiments/benchmark.py) in the time left.
# The first benchmark row (RUNS runs) tells whether RUNS fit the budget;
# else 3 runs are trained. First used on 2026-11-30 (README, "Several steps
# per call, several runs per program"), when runs were still vmapped.
set -u
budget=$1 out=$2 data=$3 depth=${4:-20} runs=${5:-3} resume=${6:-}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import jax, flax, optax, orbax.checkpoint as ocp; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", ocp.__version__, jax.devices(), "default matmul precision:", jax.config.jax_default_matmul_precision)'

data_flags=(--config.data.name=image_folder --config.data.data_dir="$data"
            --config.data.test_split= --config.parallelism=jit)
echo "== smoke ($(left) s left)"
timeout 180 python3 -m resnet_jax.main --config=configs/smoke.py \
  --workdir=/tmp/smoke "${data_flags[@]}" --config.num_runs=2 \
  --config.steps_per_call=2 || { echo "smoke failed"; exit 1; }

bench() {
  [ "$(left)" -gt 40 ] || { echo "no time left for: $*"; return; }
  echo "== benchmark $* ($(left) s left)"
  timeout 60 python3 -m experiments.benchmark --config=configs/resnet20.py \
    --config.parallelism=jit --timed_steps=96 --loop_steps=320 "$@" \
    2>&1 | tail -1 | tee -a "$out/benchmarks.jsonl"
}
# The step time of $runs runs decides how many fit the budget (at least 3,
# the fewest a Table 6 row is averaged over).
bench --config.model.depth=$depth --config.steps_per_call=32 \
  --config.num_runs=$runs
rate=$(tail -1 "$out/benchmarks.jsonl" | python3 -c \
  'import json, sys; print(json.load(sys.stdin)["loop_images_per_second_aggregate"])' 2>/dev/null)
reserve=60  # Seconds kept for packing and a last benchmark row.
if [ -n "$rate" ]; then
  # Images per second of all runs -> seconds for 64k steps, plus 60 s of
  # compiling, loading and evaluating.
  need=$(python3 -c "print(int(64000 * 128 * $runs / $rate * 1.05 + 60))")
  echo "ResNet-$depth x $runs runs needs about $need s; $(left) s left"
  if [ "$need" -gt $(($(left) - reserve)) ] && [ "$runs" -gt 3 ]; then
    runs=3
  fi
fi
workdir=runs/resnet${depth}_jpeg_r${runs}
mkdir -p runs
[ -n "$resume" ] && tar xzf "$resume" -C runs
echo "== ResNet-$depth x $runs runs, full recipe ($(left) s left)"
timeout --signal=TERM --kill-after=60 $(($(left) - reserve)) \
  python3 -m resnet_jax.main --config=configs/resnet${depth}.py \
  --workdir=$workdir "${data_flags[@]}" --config.num_runs=$runs \
  --config.steps_per_call=100 --config.keep_checkpoints=1
echo "trainer exit status $? ($(left) s left)"
cat $workdir/summary.json 2>/dev/null
tar czf "$out/$(basename $workdir).tgz" -C runs "$(basename $workdir)"
ls -la "$out"
for args in "--config.steps_per_call=1" "--config.steps_per_call=32" \
    "--config.steps_per_call=32 --config.num_runs=8" \
    "--config.steps_per_call=8" "--config.steps_per_call=32 --config.num_runs=16" \
    "--config.steps_per_call=32 --config.num_runs=2" \
    "--config.steps_per_call=1 --config.model.dtype=bfloat16" \
    "--config.steps_per_call=32 --config.model.dtype=bfloat16"; do
  bench $args
done
echo "== done ($(left) s left)"
