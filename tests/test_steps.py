"""The pure train and eval steps: gradients, updates, statistics, metrics."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from resnet_jax.core import models, optimizer, steps
import reference

IMAGE_SHAPE = (8, 8, 3)


def make_batch(n=8, seed=0, num_classes=10):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(n, *IMAGE_SHAPE)).astype(np.float32),
          'label': rng.integers(0, num_classes, n).astype(np.int32)}


def make_state(tx, depth=8, seed=0, **model_kwargs):
  model = models.ResNet(depth=depth, **model_kwargs)
  state = steps.create_train_state(jax.random.key(seed), model, tx,
                                   IMAGE_SHAPE)
  # Non-trivial batch-norm parameters and statistics, so that every term of
  # batch norm is exercised.
  _, stats = reference.init_params(depth, rng=seed, **model_kwargs)
  return state.replace(batch_stats=jax.tree.map(jnp.float32, stats))


def record_gradients() -> optax.GradientTransformation:
  """An 'optimizer' that keeps the last gradient in its state and stays put."""
  return optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (
          jax.tree.map(jnp.zeros_like, grads), grads))


def jit_train_step(**kwargs):
  return jax.jit(functools.partial(
      steps.train_step, learning_rate_fn=lambda step: 0.1, **kwargs))


def float64_loss_and_grads(state, batch, label_smoothing=0.0):
  """The mean loss and its gradient in float64, op by op (no jit)."""
  with jax.enable_x64(True):
    model = models.ResNet(depth=8, dtype=jnp.float64)
    as64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)

    def loss(params):
      logits, _ = model.apply(
          {'params': params, 'batch_stats': as64(state.batch_stats)},
          jnp.asarray(batch['image'], jnp.float64), train=True,
          mutable=['batch_stats'])
      return jnp.mean(steps.cross_entropy(logits, batch['label'],
                                          label_smoothing))

    value, grads = jax.value_and_grad(loss)(as64(state.params))
    return float(value), jax.tree.map(np.asarray, grads)


def assert_trees_close(actual, expected, rel):
  """Each leaf within `rel` of its own largest magnitude (float32 vs float64)."""
  def check(path, a, e):
    e = np.asarray(e)
    np.testing.assert_allclose(
        np.asarray(a, np.float64), e, rtol=0, atol=rel * (np.abs(e).max() + 1e-12),
        err_msg=jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(check, actual, expected)


# Float32 gradients through batch norm against float64: the worst leaf error
# seen was about 1e-6 of that leaf's largest entry.
GRAD_REL = 1e-4


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_jitted_gradients_equal_float64_gradients_without_jit(label_smoothing):
  batch = make_batch()
  state = make_state(record_gradients())
  expected_loss, expected_grads = float64_loss_and_grads(
      state, batch, label_smoothing)
  new_state, metrics = jit_train_step(label_smoothing=label_smoothing)(
      state, batch, jax.random.key(0))
  assert_trees_close(new_state.opt_state, expected_grads, GRAD_REL)
  assert float(metrics['loss']) / float(metrics['count']) == pytest.approx(
      expected_loss, rel=1e-5)


def sgd_config(**overrides):
  return ml_collections.ConfigDict(dict(
      momentum=0.0, nesterov=False, weight_decay=0.0, weight_decay_mode='l2',
      weight_decay_on='all') | overrides)


def test_one_sgd_step_moves_parameters_by_the_formula():
  lr, wd = 0.1, 1e-3
  batch = make_batch()
  tx = optimizer.create_optimizer(sgd_config(weight_decay=wd),
                                  lambda step: lr)
  state = make_state(tx)
  params = jax.tree.map(np.asarray, state.params)
  _, grads = float64_loss_and_grads(state, batch)
  new_state, _ = jit_train_step()(state, batch, jax.random.key(0))
  # L2 in the loss: w <- w - lr * (dL/dw + wd * w).
  expected = jax.tree.map(lambda w, g: w - lr * (g + wd * w), params, grads)
  assert_trees_close(new_state.params, expected, 1e-5)
  assert int(new_state.step) == 1


def test_zero_learning_rate_keeps_parameters_but_updates_batch_stats():
  tx = optimizer.create_optimizer(sgd_config(momentum=0.9, weight_decay=1e-4),
                                  lambda step: 0.0)
  state = make_state(tx)
  before = jax.tree.map(np.asarray, (state.params, state.batch_stats))
  new_state, metrics = jit_train_step()(state, make_batch(), jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, new_state.params, before[0])
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), new_state.batch_stats,
                       before[1])
  assert all(jax.tree.leaves(moved))


def test_batch_stats_update_equals_the_reference_running_average():
  state = make_state(record_gradients())
  batch = make_batch()
  _, ref_stats = reference.forward(
      state.params, state.batch_stats, batch['image'], depth=8, train=True,
      momentum=0.9)
  new_state, _ = jit_train_step()(state, batch, jax.random.key(0))
  assert_trees_close(dict(new_state.batch_stats), ref_stats, 1e-5)


def test_eval_step_uses_running_statistics():
  state = make_state(record_gradients())
  batch = make_batch(n=6)
  ref_logits, _ = reference.forward(state.params, state.batch_stats,
                                    batch['image'], depth=8, train=False)
  log_probs = ref_logits - np.log(np.exp(ref_logits).sum(-1, keepdims=True))
  metrics = jax.jit(steps.eval_step)(state, batch)
  assert float(metrics['loss']) == pytest.approx(
      -log_probs[np.arange(6), batch['label']].sum(), rel=1e-4)
  assert float(metrics['correct']) == np.sum(
      ref_logits.argmax(-1) == batch['label'])
  # Running statistics make each example's output independent of the others.
  one_by_one = [jax.jit(steps.eval_step)(
      state, jax.tree.map(lambda x: x[i:i + 1], batch)) for i in range(6)]
  assert sum(float(m['loss']) for m in one_by_one) == pytest.approx(
      float(metrics['loss']), rel=1e-5)


def test_metrics_of_a_padded_batch_equal_those_of_the_real_examples():
  state = make_state(record_gradients())
  batch = make_batch(n=8)
  padded = {'image': batch['image'].copy(), 'label': batch['label'].copy(),
            'mask': np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)}
  padded['image'][5:] = 0.0
  real = jax.tree.map(lambda x: x[:5], batch)
  got = jax.jit(steps.eval_step)(state, padded)
  want = jax.jit(steps.eval_step)(state, real)
  assert float(got['count']) == 5.0
  for key in ('loss', 'correct'):
    assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-6)


def test_label_smoothing_mixes_one_hot_with_uniform():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  log_p = jax.nn.log_softmax(logits)[0]
  expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
  assert float(steps.cross_entropy(logits, jnp.array([0]), 0.1)[0]) == (
      pytest.approx(float(expected), rel=1e-6))


def test_a_few_steps_on_one_batch_drive_the_loss_well_down():
  tx = optimizer.create_optimizer(sgd_config(momentum=0.9, weight_decay=1e-4),
                                  lambda step: 0.05)
  state = make_state(tx)
  batch = make_batch(n=32)
  step = jit_train_step()
  losses = []
  for i in range(40):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']) / float(metrics['count']))
  assert losses[0] > 2.0
  assert losses[-1] < 0.25 * losses[0]
