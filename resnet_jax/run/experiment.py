"""One run, built from its config: the single place that assembles the pieces.

`build(config, ...)` turns a config into everything a run needs: the
classifier (model and normalisation, classifier.py), the learning-rate
function and optimizer, the initial (or abstract) train state, the train and
eval steps compiled for the device layout, the batch source and the
checkpoint metadata. A run here is
config.num_runs runs trained together (runs.py): every state array has a
leading run axis, and metrics come per run. The trainer, the
benchmark, inference of a workdir and the tests all build their runs here,
so a step or a restore target is never put together twice.

Building compiles nothing and reads no file; the steps compile on first use.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import utils
from resnet_jax.core import augment
from resnet_jax.core import optimizer
from resnet_jax.core import steps
from resnet_jax.data import batching
from resnet_jax.data import datasets
from resnet_jax.run import classifier
from resnet_jax.run import config_checks
from resnet_jax.run import parallel
from resnet_jax.run import runs

# Config fields that may change when a run resumes: they decide how a run is
# observed, laid out, saved or where its files are, not what it computes.
# Every other field, present or added later, must match the checkpoint.
RESUMABLE_FIELDS = (
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints', 'eval_batch_size', 'steps_per_call', 'parallelism',
    'cpu_devices',
    'compilation_cache_dir', 'distributed', 'profile', 'data.on_device',
    'data.data_dir', 'data.download')
# What the parameters are: all that inference checks before it restores.
MODEL_FIELDS = ('depth', 'block', 'preact', 'shortcut', 'width',
                'num_classes')


def resumable(field: str) -> bool:
  """Whether a run may resume under another value of 'dotted.field'."""
  return any(field == r or field.startswith(r + '.') for r in RESUMABLE_FIELDS)


def recipe(config) -> dict[str, Any]:
  """The config as {'dotted.field': value}, less RESUMABLE_FIELDS."""
  return {field: value
          for field, value in utils.flatten(config.to_dict()).items()
          if not resumable(field)}


def load_splits(config):
  """(train, eval or None, test or None) splits of config.data, in memory.

  Refused before any training: a model of the wrong number of classes, a
  validation or test split of other images than the training split's size,
  or two splits that share examples (validating on training images).
  """
  data = config.data
  fields = [f for f in datasets.SPLIT_FIELDS if data[f]]
  loaded = {f: datasets.load_split(data, data[f]) for f in fields}
  train_ds = loaded['train_split']
  if train_ds.num_classes != config.model.num_classes:
    raise ValueError(
        f'config.model.num_classes={config.model.num_classes} but '
        f'{data.name} has {train_ds.num_classes} classes')
  for field in fields[1:]:
    loaded[field].check_fits(train_ds.images.shape[1:], train_ds.num_classes,
                             f'config.data.{field}={data[field]!r}')
  for i, first in enumerate(fields):
    for second in fields[i + 1:]:
      shared = loaded[first].shared_examples(loaded[second])
      if shared:
        raise ValueError(
            f'config.data.{first}={data[first]!r} and config.data.{second}='
            f'{data[second]!r} share {shared} examples of '
            f'{loaded[first].rows[0]!r}: the run would be evaluated on '
            "images it trains on; give them disjoint slices, e.g. "
            "'train[:90%]' and 'train[90%:]'")
  return [loaded.get(f) for f in datasets.SPLIT_FIELDS]


def compute_metrics(sums) -> dict[str, float]:
  """Mean loss and accuracy from the steps' metric sums (see steps.py)."""
  count = float(sums['count'])
  return {'loss': float(sums['loss']) / count,
          'accuracy': float(sums['correct']) / count}


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment(classifier.Classifier):
  """A run's pieces; see `build`."""
  config: ml_collections.ConfigDict
  dp: parallel.DataParallel
  total_steps: int
  steps_per_epoch: int | None  # None without a training split.
  learning_rate_fn: Any
  tx: Any
  train_ds: datasets.InMemoryDataset | None

  @property
  def num_runs(self) -> int:
    return self.config.num_runs

  def _keys(self, purpose: int) -> list[jax.Array]:
    # One per run; purpose 0: initialisation, 1: augmentation.
    return [jax.random.split(jax.random.key(seed))[purpose]
            for seed in runs.seeds(self.config)]

  @functools.cached_property
  def _augment_keys(self) -> jax.Array:
    return jnp.stack(self._keys(1))

  def init_state(self) -> steps.TrainState:
    """The freshly initialised runs, on the host side (not yet placed)."""
    return runs.stack([
        steps.create_train_state(key, self.model, self.tx, self.image_shape)
        for key in self._keys(0)])

  def abstract_state(self):
    """The state's shapes and dtypes on one device: a restore target.

    Traced, not run: no initialisation is computed (seconds saved on every
    inference load).
    """
    device = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(self.init_state))

  def checkpoint_metadata(self, training: bool = True) -> dict[str, Any]:
    """What a checkpoint must agree with to be used by this config.

    'model', 'dataset' and 'image_shape' say what the parameters are: all
    that inference checks. With `training`, 'training' adds the whole recipe
    (every config field but RESUMABLE_FIELDS), the number of steps and what
    the training data is (datasets.InMemoryDataset.source): a resume under
    another recipe or on other data would give a result no single run gives.
    """
    metadata = {
        'model': {k: self.config.model[k] for k in MODEL_FIELDS},
        'dataset': self.config.data.name,
        'image_shape': list(self.image_shape),
        'optimizer': {'momentum': self.config.optimizer.momentum > 0},
    }
    if self.train_ds is not None:
      # So that inference names the classes without the dataset (or TF).
      metadata['class_names'] = list(self.train_ds.class_names)
    metadata |= self.recorded()  # The normalisation, for readers.
    if training:
      metadata['training'] = recipe(self.config) | {
          'total_steps': self.total_steps,
          'train_data': self.train_ds and self.train_ds.source}
    return metadata

  # Compiled for the layout on first call.

  @functools.cached_property
  def _train_data(self) -> tuple:
    # The split on the devices, for steps that gather their own batch.
    if self.config.data.on_device:
      return (batching.place(self.train_ds, self.dp),)
    return ()

  @property
  def _unroll_loops(self) -> bool:
    # XLA:CPU runs the train step ~30x slower inside a lax.scan (ResNet-20 on
    # 2 cores: 9.8 s against 0.31 s, JAX 0.10.2): on CPUs the loops over
    # steps and runs are written out (runs.scan), compilation growing with k
    # and r instead. XLA then schedules the written-out steps together, so
    # k > 1 matches k = 1 to float32 rounding there, not bit for bit.
    return self.dp.devices[0].platform == 'cpu'

  @functools.cached_property
  def _compiled_train_steps(self):
    step_fn = functools.partial(
        steps.train_step, learning_rate_fn=self.learning_rate_fn,
        label_smoothing=self.config.label_smoothing,
        augment_fn=functools.partial(
            augment.augment, mean=self.mean, std=self.std,
            data=self.config.data))
    if self.config.data.on_device:
      step_fn = batching.gathering(step_fn)
    unroll = self._unroll_loops

    def run_steps(state, batches, augment_key, first_step, *data, axis_name):
      # One run's steps first_step, first_step + 1, ... in one loop: a batch
      # leaf is (examples, steps, ...); the loop wants steps first.
      def body(state, inputs):
        batch, step = inputs
        return step_fn(state, batch, jax.random.fold_in(augment_key, step),
                       *data, axis_name=axis_name)
      length = jax.tree.leaves(batches)[0].shape[1]
      inputs = (jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), batches),
                first_step + jnp.arange(length, dtype=jnp.int32))
      return runs.scan(body, state, inputs, unroll)

    def train_steps(state, batches, augment_keys, first_step, *data,
                    axis_name):
      # Batch leaves are (examples, steps, runs, ...): the layout splits the
      # first axis over the devices.
      state, sums = runs.over_runs(
          functools.partial(run_steps, axis_name=axis_name), self.num_runs,
          in_axes=(0, 2, 0, None) + (None,) * len(data),
          vectorize=self.config.vectorize_runs, unroll=unroll)(
              state, batches, augment_keys, first_step, *data)
      return state, jax.tree.map(lambda x: x.T, sums)  # (steps, runs)

    layouts = ('state', 'batch', 'shared', 'shared') + (
        ('state',) if self.config.data.on_device else ())
    return self.dp.compile(train_steps, layouts, donate=True)

  def train_steps(self, state, batches, first_step: int):
    """Training steps first_step, first_step + 1, ... in one call.

    `batches` is one item of `batches(calls)`; returns the state after them
    and the metric sums of each step and run, leaves (steps, runs).
    """
    return self._compiled_train_steps(state, batches, self._augment_keys,
                                      np.int32(first_step), *self._train_data)

  @functools.cached_property
  def eval_step(self):
    """(state, batch from batching.eval_batches) -> metric sums per run."""
    step_fn = functools.partial(steps.eval_step, preprocess_fn=functools.partial(
        augment.normalize, mean=self.mean, std=self.std))

    def eval_step(state, batch, *, axis_name):
      return runs.over_runs(functools.partial(step_fn, axis_name=axis_name),
                            self.num_runs, in_axes=(0, None),
                            vectorize=self.config.vectorize_runs,
                            unroll=self._unroll_loops)(state, batch)

    return self.dp.eval_step(eval_step)

  def batches(self, calls):
    """The batches of each call of `train_steps`, prefetched onto the devices.

    `calls` are (first step, number of steps). Each item holds this process's
    rows of the global batch of every step and run (see batching.py), leaves
    (examples, steps, runs, ...): the indices to gather when the split is on
    the devices, else the images themselves.
    """
    def one(seed, step):
      source = dict(seed=seed, step=step,
                    global_batch_size=self.config.batch_size,
                    process_index=jax.process_index(),
                    process_count=jax.process_count())
      if self.config.data.on_device:
        return {'rows': batching.train_rows(self.train_ds.num_examples,
                                            **source).astype(np.int32)}
      return batching.train_batch(self.train_ds, **source)

    def stacked(first_step, length):
      return jax.tree.map(
          lambda *steps: np.stack(steps, axis=1),
          *[jax.tree.map(lambda *runs_: np.stack(runs_, axis=1),
                         *[one(seed, step) for seed in runs.seeds(self.config)])
            for step in range(first_step, first_step + length)])

    return batching.prefetch(
        (stacked(*call) for call in calls), self.dp.put_batch)

  def evaluate(self, state, ds: datasets.InMemoryDataset) -> list[dict]:
    """Each run's loss and accuracy over every example of `ds` exactly once."""
    sums = None
    batches = batching.eval_batches(
        ds, global_batch_size=self.config.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    for batch in batching.prefetch(batches, self.dp.put_batch):
      out = self.eval_step(state, batch)
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums,
                                                   out)
    sums = jax.device_get(sums)
    if int(sums['count'][0]) != ds.num_examples:
      raise RuntimeError(f'evaluated {int(sums["count"][0])} examples of a '
                         f'split of {ds.num_examples}')
    return [compute_metrics(runs.take(sums, i)) for i in range(self.num_runs)]


def check_batch_sizes(config, dp: parallel.DataParallel) -> None:
  """The one place batch sizes meet the layout: every device of every
  process gets an equal share of each global batch. ValueError if not."""
  for field in ('batch_size', 'eval_batch_size'):
    batching.equal_share(
        config[field], dp.num_devices, f'devices ({jax.process_count()} '
        f'processes x {dp.num_local_devices})', name=f'config.{field}')


def build(config, *, dp: parallel.DataParallel | None = None,
          train_ds: datasets.InMemoryDataset | None = None,
          image_shape=None, normalization: dict | None = None) -> Experiment:
  """Assembles the run `config` describes (see the module docstring).

  Args:
    config: a validated config (config_checks.validate).
    dp: the device layout; by default config.parallelism over every device.
    train_ds: the training split. Without it (inference) there is no batch
      source, the length comes from config.num_train_steps, and
      `image_shape` must be given.
    image_shape: (H, W, C) of the images; by default the training split's.
    normalization: {'mean', 'std'} recorded with a checkpoint (inference):
      the statistics the run trained with, used as they are.

  Raises:
    ValueError: the batch sizes do not divide over the devices, a setting
      does not fit the training split (config_checks.validate_with_split) or
      the run's length (config_checks.learning_rate_fn), or the run
      normalises with statistics measured on a split not given.
  """
  dp = dp or parallel.DataParallel(config.parallelism)
  check_batch_sizes(config, dp)
  if train_ds is not None:
    steps_per_epoch, total_steps = config_checks.validate_with_split(
        config, train_ds)
    image_shape = train_ds.images.shape[1:]
  else:
    steps_per_epoch, total_steps = None, config.num_train_steps
  learning_rate_fn = config_checks.learning_rate_fn(config, total_steps)
  net = classifier.build(config, image_shape, axis_name=dp.axis_name,
                         train_ds=train_ds, normalization=normalization)
  return Experiment(
      model=net.model, image_shape=net.image_shape, mean=net.mean,
      std=net.std, config=config, dp=dp, total_steps=total_steps,
      steps_per_epoch=steps_per_epoch, learning_rate_fn=learning_rate_fn,
      tx=optimizer.create_optimizer(config.optimizer, learning_rate_fn),
      train_ds=train_ds)
