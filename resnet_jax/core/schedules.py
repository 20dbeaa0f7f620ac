"""Learning-rate schedules, all scaled linearly with the batch size.

Rates and warm-up lengths in the config are those of the reference batch size
(128, the paper's): a batch of B trains at `base_learning_rate * B / 128`, and
a warm-up of `warmup_steps` reference iterations lasts `warmup_steps * 128 / B`
steps, so that it covers the same number of images (Goyal et al. 2017).
"""

import jax.numpy as jnp

SCHEDULES = ('paper', 'warmup_cosine', 'one_cycle')


def create_learning_rate_fn(config, batch_size: int, total_steps: int):
  """The schedule (an optax.Schedule) `config`, the config's `schedule`
  block, names.

  - paper: He et al. 2015. Constant base rate, multiplied by `decay_factor`
    at each of `decay_fractions` of training (0.1 at 50% and 75%: 32k and 48k
    of 64k iterations). With `warmup_steps`, a constant
    `warmup_learning_rate` first (their ResNet-110: 0.01 for 400 iterations).
  - warmup_cosine: linear from 0 over the warm-up, then cosine to 0 at the end.
  - one_cycle: Smith's one-cycle, cosine up from peak / `one_cycle_div_factor`
    over `one_cycle_pct_start` of training, then cosine down to peak /
    (div_factor * `one_cycle_final_div_factor`).
  """
  # Imported here: a config is read and checked (SCHEDULES) without Optax.
  import optax  # pylint: disable=g-import-not-at-top
  if config.name not in SCHEDULES:
    raise ValueError(
        f'unknown schedule {config.name!r}; choose one of {SCHEDULES}')
  scale = batch_size / config.reference_batch_size
  peak = config.base_learning_rate * scale
  warmup_steps = round(config.warmup_steps / scale)
  if total_steps <= 0 or warmup_steps >= total_steps:
    raise ValueError(
        f'the schedule needs total steps > warm-up steps >= 0; got '
        f'{total_steps} total and {warmup_steps} warm-up steps (warmup_steps='
        f'{config.warmup_steps} at batch {config.reference_batch_size}, scaled to '
        f'batch {batch_size})')

  if config.name == 'paper':
    decayed = optax.piecewise_constant_schedule(
        peak, {round(f * total_steps): config.decay_factor
               for f in config.decay_fractions})
    if not warmup_steps:
      return decayed
    warmup_lr = config.warmup_learning_rate * scale
    return lambda step: jnp.where(step < warmup_steps, warmup_lr, decayed(step))
  if config.name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
        decay_steps=total_steps, end_value=0.0)
  return optax.cosine_onecycle_schedule(
      transition_steps=total_steps, peak_value=peak,
      pct_start=config.one_cycle_pct_start,
      div_factor=config.one_cycle_div_factor,
      final_div_factor=config.one_cycle_final_div_factor)
