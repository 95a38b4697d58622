"""Any dataset exported as class folders: `root/train/<class>/*` + `root/test/<class>/*`, or
`root/<class>/*` split by 5-fold CV. The class folders give the classes (their names, sorted);
training takes them from there, whatever data.num_classes says (AffectNet and CK+ read it).
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('folder', arg)
