"""FER2013 (7 classes; Training / PrivateTest). Not in the paper; a common peer benchmark.

--config.data.root: the folder holding `fer2013.csv`, or `train/<class>/` and `test/<class>/` folders.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('fer2013', arg)
