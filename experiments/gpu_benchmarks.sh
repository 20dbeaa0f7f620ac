#!/bin/bash
# The GPU benchmark table: JAX variants and PyTorch on the same card, in one
# go. Run from the repository root on a machine with one NVIDIA GPU, JAX with
# CUDA and PyTorch:
#
#   bash experiments/gpu_benchmarks.sh [results.jsonl]
#
# Each line of the results file is one benchmark's final JSON line.
set -u
out=${1:-gpu_results.jsonl}
: > "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c 'import jax, flax, torch; print("jax", jax.__version__, "flax", flax.__version__, "torch", torch.__version__, jax.devices())'

jax_bench() {
  echo "== jax $*"
  python3 -m experiments.benchmark --config=configs/resnet20.py \
    --config.parallelism=jit "$@" 2>&1 | tail -1 | tee -a "$out"
}
torch_bench() {
  echo "== torch $*"
  python3 -m experiments.torch_benchmark --device=cuda "$@" 2>&1 | tail -1 | tee -a "$out"
}

jax_bench --input=device --config.batch_size=128
jax_bench --input=device --config.batch_size=128 --config.model.dtype=bfloat16
jax_bench --input=device --config.batch_size=128 --config.model.dtype=bfloat16 --loop_steps=0
jax_bench --input=host --config.batch_size=1024 --config.model.dtype=bfloat16 --loop_steps=0
jax_bench --input=device --config.batch_size=512 --config.model.dtype=bfloat16 --loop_steps=0
jax_bench --input=device --config.batch_size=1024 --config.model.dtype=bfloat16 --loop_steps=0
jax_bench --input=device --config.batch_size=1024 --loop_steps=0
# Several steps per call, several runs per program (README).
for k in 1 8 32; do jax_bench --config.batch_size=128 --config.steps_per_call=$k --timed_steps=96 --loop_steps=320; done
for r in 2 4 8; do
  jax_bench --config.batch_size=128 --config.steps_per_call=32 --config.num_runs=$r --timed_steps=96 --loop_steps=320
  jax_bench --config.batch_size=128 --config.steps_per_call=32 --config.num_runs=$r --config.vectorize_runs=True --timed_steps=96 --loop_steps=320
done
torch_bench --batch_size=128 --variants=eager_cl_f32,eager_cl_bf16
# CUDA graphs: what makes PyTorch fast at small batches on a GPU.
torch_bench --batch_size=128 --variants=compiled_cl_f32,compiled_cl_bf16 --compile_mode=reduce-overhead
torch_bench --batch_size=1024 --variants=eager_cl_bf16,compiled_cl_bf16 --compile_mode=reduce-overhead
