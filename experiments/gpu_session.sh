#!/bin/bash
# Table 6 of He et al. on the JPEG copy of CIFAR-10, job after job, within a
# wall-time budget: for a machine you hold for a limited time (a notebook
# session, a preemptible or rented GPU VM).
#
#   bash experiments/gpu_session.sh SECONDS OUT_DIR DATA_DIR RESUME_DIR \
#     JOB [JOB ...]
#
# DATA_DIR holds train/<class>/*.jpg (the unzipped JPEG copy). A JOB is
# DEPTH:FIRST_SEED:NUM_SEEDS, with :vmap after it for vectorized runs
# (config.vectorize_runs; looped runs otherwise): one
# experiments/reproduce_table6.py sweep, the paper's full recipe in float32
# under JAX's default precision (TF32 on the GPU), 45k/5k split, $K steps per
# call (default 100; say K=1 on a CPU), into
# runs/table6/resnet<DEPTH>-seeds<FIRST>-<LAST>. A workdir packed by an
# earlier time slot, RESUME_DIR/<that name>.tgz, is unpacked first: the job
# resumes it, bit-identically (train.py). The job that would overrun the
# budget gets SIGTERM, saves a checkpoint and stops; no job starts after it.
# Each job's workdir is packed as OUT_DIR/<name>.tgz (checkpoints, config,
# summary, events and trainer.log, the logs of all its sessions): finished,
# it gives the table and the released weights; unfinished, it goes into
# RESUME_DIR on the next machine.
set -u
budget=$1 out=$2 data=$3 resume_dir=$4
shift 4
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
reserve=30  # Seconds kept for packing the workdir of the last job.
root=runs/table6
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import jax, flax, optax, orbax.checkpoint as ocp; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", ocp.__version__, jax.devices(), "default matmul precision:", jax.config.jax_default_matmul_precision)'
mkdir -p "$root"
pack() {  # The workdir $1, its log appended, into $out.
  local log=$root/$1/trainer.log
  [ -f "$root/logs/$1.log" ] && cat "$root/logs/$1.log" >> "$log"
  grep -E "Resuming|Training steps|val_accuracy|preempted|error:" "$log" |
    tail -4 | cut -c 1-300
  cat "$root/$1/summary.json" 2>/dev/null && echo
  tar czf "$out/$1.tgz" -C "$root" "$1"
  local size=$(stat -c %s "$out/$1.tgz")
  echo "$out/$1.tgz: $size bytes"
}
for job in "$@"; do
  IFS=: read -r depth first num layout <<< "$job"
  case $layout in ''|vmap) ;; *) echo "error: bad job $job"; exit 1;; esac
  name=resnet$depth-seeds$first-$((first + num - 1))
  if [ -f "$resume_dir/$name.tgz" ]; then
    tar xzf "$resume_dir/$name.tgz" -C "$root" || exit 1
  fi
  [ "$(left)" -gt $((reserve + 60)) ] || { echo "no time left for $job"; break; }
  echo "== $job: $name ($(left) s left)"
  timeout --signal=TERM --kill-after=30 $(($(left) - reserve)) \
    python3 -m experiments.reproduce_table6 --depths="$depth" \
    --first_seed="$first" --num_seeds="$num" --root="$root" \
    --config.data.name=image_folder --config.data.data_dir="$data" \
    --config.data.test_split= --config.parallelism=jit \
    --config.steps_per_call="${K:-100}" --config.keep_checkpoints=1 \
    ${layout:+--config.vectorize_runs=True} > /dev/null
  status=$?
  echo "exit status $status ($(left) s left)"
  [ -d "$root/$name" ] && pack "$name"
  [ "$status" -eq 0 ] || break  # Stopped or failed: the next job waits.
done
cp "$root/table6.md" "$root/table6.csv" "$out/" 2>/dev/null
echo "== done ($(left) s left)"
