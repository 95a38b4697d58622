"""MMI exported as class folders (neutral + peak frames), 7 classes, 5-fold CV. Paper: 68.75 %.

--config.data.root: `root/<class>/*.png|jpg`. Folds are subject-wise where file names carry a subject id.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('mmi', arg)
