"""CIFAR ResNets (He et al. 2015) in JAX/Flax.

  import resnet_jax
  model = resnet_jax.pretrained('resnet20')
  model.predict(images)  # uint8 (N, 32, 32, 3) -> ['cat', 'ship', ...]
"""


def pretrained(name='resnet20'):
  """A released model, ready to use: a shipped release by name ('resnet20',
  'resnet56'), or any release by its path ('./my_release', a pathlib.Path).

  Returns inference.Loaded: `predict(images)` gives class names,
  `probabilities(images)` and `logits(images)` arrays (N, classes), for uint8
  images (N, H, W, C); `class_names`, `config` and `step` say what it is.
  """
  # Imported here: `import resnet_jax` stays free of JAX's start-up.
  from resnet_jax import inference  # pylint: disable=g-import-not-at-top
  from resnet_jax import releases  # pylint: disable=g-import-not-at-top
  return inference.load(releases.path(name))
