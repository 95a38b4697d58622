"""RAF-DB basic (7 classes, official 12,271 / 3,068 split). Paper: 86.15 %.

--config.data.root: the folder holding `EmoLabel/list_patition_label.txt` and `Image/aligned/`
(or `Image/original/`).
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('raf', arg)
