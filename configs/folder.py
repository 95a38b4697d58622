"""Any dataset exported as class folders: `root/train/<class>/*` + `root/test/<class>/*`, or
`root/<class>/*` split by 5-fold CV. Set --config.data.num_classes to the number of class folders.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('folder', arg)
