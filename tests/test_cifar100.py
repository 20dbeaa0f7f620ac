"""configs/resnet56_cifar100.py on a small CIFAR-100 prepared by TFDS."""

import jax
import numpy as np

import fake_cifar
from configs import resnet56_cifar100
from resnet_jax.run import config_checks
from resnet_jax.run import experiment
from resnet_jax.run import parallel


def test_the_cifar100_config_loads_tfds_cifar100_with_its_fine_labels(
    cifar100_dir):
  config = resnet56_cifar100.get_config()
  config_checks.validate(config)
  assert (config.data.name, config.model.num_classes) == ('cifar100', 100)
  # Its splits as fractions: the fake dataset has 100 training images.
  config.data.update(data_dir=cifar100_dir, train_split='train[:90%]',
                     eval_split='train[90%:]')
  splits = experiment.load_splits(config)
  assert [ds.num_examples for ds in splits] == [90, 10, 100]
  for ds, split in zip(splits, ('train', 'train', 'test')):
    assert ds.class_names == fake_cifar.CIFAR100_CLASS_NAMES
    want_images, want_labels = fake_cifar.examples(split, 100)
    ids = fake_cifar.image_ids(ds.images)  # TFDS shuffles the examples.
    np.testing.assert_array_equal(ds.images, want_images[ids])
    np.testing.assert_array_equal(ds.labels, want_labels[ids])  # Fine ones.
  config.batch_size = 16  # At most the 90 training images.
  exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                         train_ds=splits[0])
  state = jax.eval_shape(exp.init_state)
  assert sum(x.size for x in jax.tree.leaves(state.params)) == 858_868
