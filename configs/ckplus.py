"""CK+: neutral first frame + peak frame of each labelled sequence, 7 classes, subject-wise 5-fold CV.
Paper: 98.18 %. Run every fold with `python -m launch.cross_validate --config=configs/ckplus.py ...`.

--config.data.root: the folder holding `cohn-kanade-images/` and `Emotion/`, or the CK+48 class folders
(which hold no neutral faces: 6 classes, not the paper's 7).
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('ckplus', arg, num_classes=7)
