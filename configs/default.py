"""The defaults of every run (resnet_jax/run/defaults.py documents each field).

Command:
  python -m resnet_jax.main --config=configs/default.py

That is ResNet-20 with the recipe of He et al. 2015 (configs/resnet20.py
gives its measured accuracy and time). The other configs start from this one.
"""

from resnet_jax.run.defaults import get_config  # pylint: disable=unused-import
