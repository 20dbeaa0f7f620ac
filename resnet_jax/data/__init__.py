"""TFDS and image folders to uint8 splits in memory; batches by (seed, step).
Imports only resnet_jax.utils of the project."""
