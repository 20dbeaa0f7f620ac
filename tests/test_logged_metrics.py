"""What the trainer logs, against values computed another way.

A short run of the trainer (train_and_evaluate, the oracle's config, its
small dataset in place of the loaded splits, stopped after 6 steps) logs
every 3 steps. Its
TensorBoard events must hold, at step s, the mean loss and accuracy of steps
s - 2 .. s (sums over the window's examples divided by their count) and the
learning rate the optimizer applied at step s, as recomputed here from the
pure step driven by hand (oracle.hand_steps) and the schedule written out.
"""

import pytest

from resnet_jax.run import metric_writer, train
import oracle

# A run of the trainer, end to end (~10-30 s).
pytestmark = pytest.mark.slow

LOG_EVERY = 3
STEPS = 6


@pytest.fixture(scope='module')
def logged(tmp_path_factory):
  c = oracle.config(log_every_steps=LOG_EVERY,
                    eval_every_steps=STEPS, checkpoint_every_steps=STEPS,
                    parallelism='jit', compilation_cache_dir='',
                    **{'data.eval_split': '', 'data.test_split': ''})
  ds = oracle.dataset()
  workdir = tmp_path_factory.mktemp('logged')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, '_load_data', lambda config: [ds, None, None])
    # The first STEPS of the config's 20, inside the warm-up.
    train.train_and_evaluate(c, str(workdir), stop_at_step=STEPS)
  return c, ds, metric_writer.scalars(workdir)


def _warmup_rate(c, step):
  # warmup_cosine inside its warm-up: linear from 0 over
  # warmup_steps * 128 / batch_size steps to base rate * batch_size / 128.
  scale = c.batch_size / c.schedule.reference_batch_size
  warmup = round(c.schedule.warmup_steps / scale)
  assert step < warmup
  return c.schedule.base_learning_rate * scale * step / warmup


def test_logged_loss_and_accuracy_are_the_means_over_the_log_window(logged):
  c, ds, scalars = logged
  step = oracle.hand_steps(c, ds)
  state = oracle.initial_state(c, ds)
  per_step = []
  for k in range(STEPS):
    state, sums = step(state, k)
    per_step.append(sums)
  for end in range(LOG_EVERY, STEPS + 1, LOG_EVERY):
    window = per_step[end - LOG_EVERY:end]
    count = sum(float(s['count']) for s in window)
    loss = sum(float(s['loss']) for s in window) / count
    accuracy = sum(float(s['correct']) for s in window) / count
    # `end` steps of float32 reductions over 16 x 8 x 8 terms in the
    # trainer's program and in the hand's (oracle.float32_atol).
    assert scalars['train_loss', end] == pytest.approx(
        loss, rel=0, abs=oracle.float32_atol(loss, 16 * 8 * 8, end))
    # Exact, but for the float32 that TensorBoard's events store.
    assert scalars['train_accuracy', end] == pytest.approx(accuracy,
                                                           rel=2.0 ** -24)
    # Another window's mean, or the window's last step, would show.
    last = float(window[-1]['loss']) / float(window[-1]['count'])
    assert abs(last - loss) > 10 * oracle.float32_atol(loss, 16 * 8 * 8, end)


def test_the_logged_learning_rate_is_the_one_applied_at_that_step(logged):
  c, _, scalars = logged
  for end in range(LOG_EVERY, STEPS + 1, LOG_EVERY):
    # Step `end` is the update from end - 1 steps done to end.
    assert scalars['learning_rate', end] == pytest.approx(
        _warmup_rate(c, end - 1), rel=1e-6)
    assert _warmup_rate(c, end) != pytest.approx(_warmup_rate(c, end - 1))
