"""JAFFE (213 posed images of 10 subjects, 7 classes), subject-wise 5-fold CV. Not in the paper.

--config.data.root: the folder holding the `KA.AN1.39.tiff`-style files.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('jaffe', arg)
