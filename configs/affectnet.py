"""AffectNet, manually annotated (7 classes: neutral + 6 basic; 8 with contempt). Paper: 59.28 %.

--config.data.root: the folder holding `Manually_Annotated_file_lists/` and
`Manually_Annotated_Images/` (or the newer `train_set/`, `val_set/` with `images/` + `annotations/`).
The validation set serves as the test set, as in the paper.
"""
from lnl_jax.config_base import dataset_config


def get_config(arg=None):
  return dataset_config('affectnet', arg, num_classes=7)
