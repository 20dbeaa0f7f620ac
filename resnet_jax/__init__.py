"""CIFAR ResNets (He et al. 2015) in JAX/Flax.

  import resnet_jax
  model = resnet_jax.pretrained('resnet20')
  model.predict(images)  # uint8 (N, 32, 32, 3) -> ['cat', 'ship', ...]
"""

import os

# XLA:CPU's YNNPACK reduce fusion computes NaN on jaxlib 0.12.1 for a
# bfloat16 sum(relu(relu(x) + x)), the shape of a residual block's output
# pooled, where op-by-op and jaxlib 0.10.2 are right: turn that one fusion off.
# XLA reads XLA_FLAGS when JAX starts its CPU backend, so this holds wherever
# resnet_jax is imported first; a --xla_cpu_experimental_ynn_fusion_type of
# the user's own wins.
_YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
if _YNN_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, [os.environ.get('XLA_FLAGS'), f'{_YNN_FLAG}=-reduce']))


def pretrained(name='resnet20'):
  """A released model, ready to use: a shipped release by name ('resnet20',
  'resnet56'), or any release by its path ('./my_release', a pathlib.Path).

  Returns inference.Loaded: `predict(images)` gives class names,
  `probabilities(images)` and `logits(images)` arrays (N, classes), for uint8
  images (N, H, W, C); `class_names`, `config` and `step` say what it is.
  """
  # Imported here: `import resnet_jax` stays free of JAX's start-up.
  # pylint: disable=g-import-not-at-top
  from resnet_jax.read import inference, release_format
  return inference.load(release_format.path(name))
