"""Several independent runs in one program: a leading run axis.

With config.num_runs = r, run i is the run of seed + i: its own
initialisation, data order, augmentation keys, batch-norm statistics and
metrics. Every array of the train state carries the run axis first (r = 1
included, so a checkpoint's layout does not depend on r), and the steps are
mapped over it, in one of two ways (config.vectorize_runs):

- a loop over the runs inside the compiled program (the default): each run
  computes what it computes alone and costs what it costs alone (a lax.map;
  on a CPU the loop is written out, see experiment.py, and matches a single
  run to float32 rounding); the runs share one process, one compilation
  and one call per k steps;
- `jax.vmap`: one batched operation for all runs. XLA turns a convolution
  with per-run kernels into a grouped convolution, which the H200 ran at
  1.5-1.9x the time of the runs' own (README, "Several steps per call,
  several runs per program"): use it where grouped convolutions are fast. Results match the loop's to float32
  rounding, not bit for bit.

Collectives inside a step (gradients and batch-norm statistics over the
devices' 'batch' axis) stay per run either way: never over the runs.
"""

import jax
import jax.numpy as jnp


def seeds(config) -> list[int]:
  """The seed of each run: config.seed, config.seed + 1, ..."""
  return [config.seed + i for i in range(config.num_runs)]


def over_runs(fn, num_runs: int, in_axes: tuple, vectorize: bool = False,
              unroll: bool = False):
  """`fn` applied to each run: outputs gain a leading run axis.

  `in_axes` says where each positional argument has its run axis (None: the
  same for every run), as for jax.vmap. With `vectorize`, jax.vmap; else a
  loop over the runs (see the module docstring), unrolled in the program
  with `unroll` (see experiment.py: for CPUs). For one run the run axis is indexed and
  put back: the program is the one without runs.
  """
  if num_runs > 1 and vectorize:
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    # The arguments with a run axis, that axis first, are what the loop
    # maps over; the others are the same for every run.
    per_run = [jax.tree.map(lambda x, axis=axis: jnp.moveaxis(x, axis, 0),
                            arg) for arg, axis in zip(args, in_axes)
               if axis is not None]

    def one_run(run_args):
      run_args = iter(run_args)
      return fn(*[arg if axis is None else next(run_args)
                  for arg, axis in zip(args, in_axes)])

    if num_runs == 1:
      return jax.tree.map(lambda x: x[None], one_run(take(per_run, 0)))
    if unroll:
      return stack([one_run(take(per_run, i)) for i in range(num_runs)])
    return jax.lax.map(one_run, per_run)

  return mapped


def stack(trees: list):
  """Pytrees of one run each -> one pytree with a leading run axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree, run: int):
  """Run `run` of a pytree with a leading run axis."""
  return jax.tree.map(lambda x: x[run], tree)
