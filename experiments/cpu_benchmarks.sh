#!/bin/bash
# The CPU benchmark table: JAX variants and PyTorch on the same machine, in one
# go. Run from the repository root with the package (and torch, the `torch`
# extra) installed, on an otherwise idle machine:
#
#   bash experiments/cpu_benchmarks.sh [results.jsonl]
#
# Each line of the results file is one benchmark's final JSON line.
set -u
out=${1:-cpu_results.jsonl}
: > "$out"
export PYTHONUNBUFFERED=1
lscpu | grep -E 'Model name|^CPU\(s\)'
python -c 'import jax, torch; print("jax", jax.__version__, "torch", torch.__version__)'

jax_bench() {
  echo "== jax $*"
  python -m experiments.benchmark --config=configs/resnet20.py "$@" 2>&1 | tail -1 | tee -a "$out"
}
torch_bench() {
  echo "== torch $*"
  python -m experiments.torch_benchmark --device=cpu "$@" 2>&1 | tail -1 | tee -a "$out"
}

jax_bench --config.parallelism=jit --loop_steps=30
jax_bench --loop_steps=30  # sharded, one device per core (config.cpu_devices=0)
jax_bench --config.parallelism=pmap --loop_steps=30
jax_bench --config.parallelism=shard_map --loop_steps=30
# Without XLA:CPU's multi-output fusion options (the default: parallel.py): an
# option XLA does not know replaces them (XLA passes LLVM no xla_ option).
XLA_FLAGS=--xla_backend_extra_options=xla_cpu_none jax_bench --loop_steps=30
jax_bench --config.model.dtype=bfloat16 --loop_steps=30
jax_bench --input=host --loop_steps=30
jax_bench --config.steps_per_call=8 --loop_steps=32
jax_bench --config.num_runs=2 --loop_steps=30  # runs looped over in the program
jax_bench --config.num_runs=2 --config.vectorize_runs=True --loop_steps=30
torch_bench --variants=eager_nchw_f32,eager_cl_f32,eager_cl_bf16,compiled_cl_f32
