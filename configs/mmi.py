r"""MMI exported as class folders (neutral + peak frames), 7 classes, 5-fold CV. Paper: 68.75 %.

--config.data.root: `root/<class>/*.png|jpg`. The folds are stratified by class: class folders
name no subject, so a subject's faces can fall on both sides of a fold. Where the file names hold
the subject, `--config.data.subject_pattern=REGEX` (its group 'subject', else group 1, else the
whole match, e.g. '^(S\d+)_') makes the folds subject-wise.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('mmi', arg)
