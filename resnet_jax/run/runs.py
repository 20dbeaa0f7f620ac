"""Several independent runs in one program: a leading run axis.

Run i of config.num_runs is the run of seed + i (its own initialisation, data
order, augmentation and batch-norm statistics). Every state array has the run
axis first, r = 1 included, so a checkpoint's layout does not depend on r.
The steps map over it with a loop inside the program (the default: each run
computes what it would alone; written out on a CPU) or, with
config.vectorize_runs, jax.vmap (grouped convolutions: 1.5-1.9x the runs' own
time on an H200; equal to the loop to float32 rounding). Collectives stay per
run: never over the runs.
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
  loop over the runs, written out with `unroll` (see `scan`). For one run
  the run axis is indexed and put back: the program is the one without runs.
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
    return scan(lambda _, run_args: (None, one_run(run_args)), None, per_run,
                unroll)[1]

  return mapped


def scan(body, carry, xs, unroll: bool):
  """jax.lax.scan(body, carry, xs), or with `unroll` the same loop written
  out in the program: XLA:CPU runs a step ~30x slower inside a scan (the
  trainer's loops over steps and runs, on CPUs: see experiment.py)."""
  if not unroll:
    return jax.lax.scan(body, carry, xs)
  ys = []
  for i in range(len(jax.tree.leaves(xs)[0])):
    carry, y = body(carry, take(xs, i))
    ys.append(y)
  return carry, stack(ys)


def stack(trees: list):
  """Pytrees of one run each -> one pytree with a leading run axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree, run: int):
  """Run `run` of a pytree with a leading run axis."""
  return jax.tree.map(lambda x: x[run], tree)
