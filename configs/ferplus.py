"""FERPlus (8 classes, trained on the annotators' vote distributions as soft labels). Not in the paper.

--config.data.root: the folder holding `fer2013new.csv` and `fer2013.csv` (its pixels).
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('ferplus', arg, num_classes=8)
