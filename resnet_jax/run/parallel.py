"""Compiles the steps (steps.py, written once) for a device layout.

'sharded' (the default, the layout JAX's docs teach): `jax.jit` over a mesh
of every device of every process, the state replicated and the batch split
along its first axis (`NamedSharding`). The steps are written for one device
(axis_name=None) and XLA's partitioner adds the reductions, so gradients,
batch-norm statistics and metrics are over the global batch; on one device it
is plain `jit`. 'shard_map': the same mesh and placement, the steps run per
device and reduce over the 'batch' axis themselves. 'pmap': every local
device, the state with a leading device axis (JAX keeps `pmap` in maintenance
only). 'jit': one device. All four compute the same update from the same
global batch.
"""

import dataclasses
import functools
import os

from absl import logging

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

AXIS = 'batch'
MODES = ('sharded', 'jit', 'pmap', 'shard_map')
# The modes whose mesh spans every process (multi-host).
GLOBAL_MODES = ('sharded', 'shard_map')


def cpu_device_count(cores: int, batch_sizes) -> int:
  """The most CPU devices, at most `cores`, that every batch size divides by."""
  return max(n for n in range(1, max(cores, 1) + 1)
             if all(size % n == 0 for size in batch_sizes))


# XLA_FLAGS for XLA:CPU, added to the user's (whose own value of a flag wins).
XLA_FLAGS = {
    # XLA:CPU aborts the process when a device reaches an all-reduce more than
    # this many seconds (default 40) after XLA's "may be stuck" warning (20 s)
    # after another: a loaded machine starved one device's threads that long
    # (2 of 5 runs at load 10, issue 34). A busy machine must slow training,
    # never end it: wait as long as it takes (-1); a genuine hang still logs
    # the warning.
    'xla_cpu_collective_call_terminate_timeout_seconds': '-1',
    # XLA:CPU's multi-output fusion options: without them XLA recomputes each
    # stage's batch-norm/ReLU chain inside the backward pass's weight-gradient
    # convolutions, a cost that grows faster than depth. Faster the deeper
    # (2-core AMD EPYC, idle, JAX 0.12.1, b128 f32, 'sharded', train images/s:
    # ResNet-56 48.3 against 32.5; ResNet-20 141 and 136 against 153 and 137, no
    # gain; a 2-core Intel Xeon: ResNet-56 1.14x, ResNet-20 no gain). Evaluation
    # logits the same bit for bit (ResNet-20, measured); a training step sums in
    # another order, within float32 rounding of the step in float64
    # (tests/test_xla_flags.py); two processes still train like one to that
    # rounding (test_multiprocess). A --xla_backend_extra_options of your own
    # replaces both (XLA turns on each option it is given, whatever the value;
    # one it does not know, such as xla_cpu_none, turns on none). Other backends
    # ignore them (LLVM is passed no option named xla_...).
    'xla_backend_extra_options':
        'xla_cpu_use_multi_output_fusion,xla_cpu_flatten_after_fusion',
}


def set_xla_flags(environ=os.environ) -> str:
  """Adds XLA_FLAGS' entries for XLA:CPU to environ['XLA_FLAGS'] (read when
  JAX's backends start), leaving any flag the user set as it is; returns it."""
  flags = environ.get('XLA_FLAGS', '').split()
  given = {flag.lstrip('-').split('=', 1)[0] for flag in flags}
  flags += [f'--{name}={value}' for name, value in XLA_FLAGS.items()
            if name not in given]
  environ['XLA_FLAGS'] = ' '.join(flags)
  return environ['XLA_FLAGS']


def configure_cpu_devices(config) -> int | None:
  """Sets XLA's flags (set_xla_flags) and splits the CPU into
  config.cpu_devices devices (0: one per core, fewer until the batch sizes
  divide) before JAX starts; returns the count, or None where XLA_FLAGS or a
  running backend decides.

  One device per core trains faster under pmap (ResNet-20 on 2 cores: 380-406
  images/s against 312-337 on one device). GPUs and TPUs are unaffected.
  """
  logging.info('XLA_FLAGS=%s', set_xla_flags())
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return None
  count = config.cpu_devices
  if count == 0:
    count = cpu_device_count(len(os.sched_getaffinity(0)),
                             [config.batch_size, config.eval_batch_size])
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError as e:  # The backends are already running.
    logging.info('CPU device count left as it is: %s', e)
    return None
  return count


def initialize_distributed(config) -> None:
  """Joins the processes of a multi-host job (config.distributed) before JAX's
  backends start. Fields left unset JAX finds itself (TPU VMs, Slurm, MPI)."""
  settings = config.distributed
  if not settings.enabled:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=settings.coordinator_address or None,
      num_processes=settings.num_processes or None,
      process_id=None if settings.process_id < 0 else settings.process_id)


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """A layout of the train state and batches over `devices`."""
  mode: str
  devices: tuple = ()

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'unknown parallelism {self.mode!r}; choose one of '
                       f'{MODES}')
    if self.mode not in GLOBAL_MODES and jax.process_count() > 1:
      raise ValueError(
          f'parallelism={self.mode!r} runs within one process; use one of '
          f'{GLOBAL_MODES} with several processes ({jax.process_count()})')
    devices = tuple(self.devices) or tuple(
        jax.devices() if self.mode in GLOBAL_MODES else jax.local_devices())
    if self.mode == 'jit':
      devices = devices[:1]
    object.__setattr__(self, 'devices', devices)

  @property
  def axis_name(self) -> str | None:
    """The axis the steps reduce over; None where they are written for one
    device ('jit', and 'sharded', whose reductions XLA adds)."""
    return AXIS if self.mode in ('pmap', 'shard_map') else None

  @property
  def num_devices(self) -> int:
    """Devices of the layout, over all processes."""
    return len(self.devices)

  @property
  def num_local_devices(self) -> int:
    """Devices of the layout that belong to this process."""
    return sum(d.process_index == jax.process_index() for d in self.devices)

  @functools.cached_property
  def mesh(self) -> Mesh:
    """A one-axis mesh of the devices, named AXIS."""
    return Mesh(np.array(self.devices), (AXIS,))

  def put_state(self, state):
    """Places a state (or any pytree) on the devices, replicated."""
    if self.mode == 'pmap':
      n, sharding = self.num_devices, NamedSharding(self.mesh, P(AXIS))
      return jax.tree.map(
          lambda x: jax.device_put(jnp.broadcast_to(x, (n, *jnp.shape(x))),
                                   sharding), state)
    if self.mode in GLOBAL_MODES:
      if jax.process_count() > 1:
        # Through the host: arrays restored from a checkpoint sit on one
        # device, and no device is copied from across hosts.
        state = jax.device_get(state)
      return jax.device_put(state, NamedSharding(self.mesh, P()))
    return jax.device_put(state, self.devices[0])

  def get_state(self, state):
    """One copy of a replicated state (the inverse of `put_state`)."""
    return _first(state) if self.mode == 'pmap' else state

  def put_batch(self, batch):
    """Splits this process's batch of host arrays over its devices.

    Under 'sharded' and 'shard_map' the processes' batches, in process order,
    make one global batch. The transfer is asynchronous. The batch size must divide
    over the devices (experiment.build checks the configured ones).
    """
    if self.mode == 'pmap':
      n, sharding = self.num_devices, NamedSharding(self.mesh, P(AXIS))
      return jax.tree.map(lambda x: jax.device_put(
          x.reshape(n, x.shape[0] // n, *x.shape[1:]), sharding), batch)
    if self.mode in GLOBAL_MODES:
      sharding = NamedSharding(self.mesh, P(AXIS))
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    return jax.device_put(batch, self.devices[0])

  def compile(self, step_fn, layouts: tuple[str, ...], donate: bool):
    """Compiles `step_fn(*args, axis_name=...)` for this layout.

    `layouts` says how each argument lies on the devices: 'state' (from
    `put_state`: replicated), 'batch' (from `put_batch`: split along its first
    axis) or 'shared' (one value for all, such as a key). The state (the
    first argument) is donated when `donate`.
    """
    fn = functools.partial(step_fn, axis_name=self.axis_name)
    donate_argnums = (0,) if donate else ()
    if self.mode == 'jit':
      return jax.jit(fn, donate_argnums=donate_argnums)
    if self.mode == 'sharded':
      # The arguments keep the shardings they were placed with; every output
      # (the state, the metrics) is replicated, as the next step takes it.
      return jax.jit(fn, out_shardings=NamedSharding(self.mesh, P()),
                     donate_argnums=donate_argnums)
    if self.mode == 'pmap':
      pmapped = jax.pmap(
          fn, axis_name=AXIS, devices=self.devices,
          in_axes=tuple(None if l == 'shared' else 0 for l in layouts),
          donate_argnums=donate_argnums)
      # Metrics (the last output) were summed over the axis, so every device
      # holds the total: device 0's copy is returned.
      return lambda *args: _first_of_last(pmapped(*args))
    in_specs = tuple(P(AXIS) if l == 'batch' else P() for l in layouts)
    # check_vma=False keeps pmap's semantics, where a gradient is per device
    # until the step sums it: with it on, shard_map would sum it implicitly.
    return jax.jit(
        jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=P(),
                      check_vma=False),
        donate_argnums=donate_argnums)

  def train_step(self, step_fn, *, with_data: bool = False):
    """`step_fn(state, batch, rng) -> (state, metrics)` compiled for this layout.

    Takes a state from `put_state` and a batch from `put_batch`; returns one
    copy of the metrics. With `with_data`, the step takes a fourth argument
    laid out like the state: the dataset on the devices (batching.place).
    """
    layouts = ('state', 'batch', 'shared') + (('state',) if with_data else ())
    return self.compile(step_fn, layouts, donate=True)

  def eval_step(self, step_fn):
    """`step_fn(state, batch) -> metrics` compiled for this layout."""
    return self.compile(step_fn, ('state', 'batch'), donate=False)


def _first(tree):
  return jax.tree.map(lambda x: x[0], tree)


def _first_of_last(outputs):
  if isinstance(outputs, tuple):
    return (*outputs[:-1], _first(outputs[-1]))
  return _first(outputs)
