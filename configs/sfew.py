"""SFEW 2.0 aligned faces (7 classes; the validation set is the test set). Paper: 57.80 %.

--config.data.root: the folder holding `Train/Train_Aligned_Faces/<Class>/` and `Val/Val_Aligned_Faces/<Class>/`.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('sfew', arg)
