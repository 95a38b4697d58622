"""TFDS builders for RAF-DB basic and FER2013, prepared from a manual-download folder.

Neither dataset may be downloaded automatically: put the files in a folder as each builder's
MANUAL_DOWNLOAD_INSTRUCTIONS say and pass it as the manual dir. Examples are listed by the
project's readers (`read_rafdb`, `read_fer2013_csv`), so TFDS sees exactly the splits and labels
the rest of the code does. Importing this module registers 'raf_db' and 'fer2013_manual':

  import tensorflow_datasets as tfds
  from lnl_jax.data import tfds_builders  # pylint: disable=unused-import  (registers the names)

  ds = tfds.load('raf_db', split='train', data_dir='/data/tfds', download_and_prepare_kwargs={
      'download_config': tfds.download.DownloadConfig(manual_dir='/data/RAF-DB/basic')})
"""
from __future__ import annotations

import os
import textwrap
from typing import Callable

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lnl_jax.data import readers
from lnl_jax.data.readers_fer import FER2013_CLASSES
from lnl_jax.data.readers_fer import FER2013_SIDE
from lnl_jax.data.readers_wild import RAFDB_CLASSES
from lnl_jax.data.records import Records
from lnl_jax.errors import DataError

# TFDS 4.9.10 finds a builder's file through `importlib_resources`, which it does not install on
# Python >= 3.9 (tensorflow/datasets#11212); naming the file directly skips that look-up.
_CODE_PATH = epath.Path(__file__)


def _read_splits(builder: tfds.core.GeneratorBasedBuilder, dl_manager,
                 read: Callable[[str, str], Records], splits: tuple[str, ...],
                 subdir: str = '') -> dict[str, Records]:
  """{split: read(root, split)} with root the manual dir (or its `subdir`, when present).

  All splits are read before any example is written, so a bad manual dir fails at once, with a
  `DataError` that ends with the builder's instructions.
  """
  try:
    root = os.fspath(dl_manager.manual_dir)  # raises when missing or empty
  except AssertionError as e:  # TFDS's message already quotes the instructions
    raise DataError(f'{builder.name}: {e}') from None
  if subdir and os.path.isdir(os.path.join(root, subdir)):
    root = os.path.join(root, subdir)
  try:
    return {split: read(root, split) for split in splits}
  except DataError as e:
    raise DataError(f'{builder.name}: {e}\nThe manual dir must be prepared as follows:\n'
                    f'{textwrap.dedent(builder.MANUAL_DOWNLOAD_INSTRUCTIONS)}') from None


class RafDb(tfds.core.GeneratorBasedBuilder):
  """RAF-DB basic (Li et al., CVPR 2017): 7 basic expressions, 12,271 train / 3,068 test faces."""

  code_path = _CODE_PATH
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Aligned (or original) faces listed by lnl_jax.data.readers.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request RAF-DB from http://www.whdeng.cn/raf/model1.html and use the `basic/` folder of the
  release as the manual dir (or a folder holding `basic/`). It must contain
    EmoLabel/list_patition_label.txt   (sic; lines like `train_00001.jpg 5`, labels 1..7)
    Image/aligned/train_00001_aligned.jpg ... test_03068_aligned.jpg   (unzip aligned.zip)
  `Image/original/train_00001.jpg ...` is used instead when `Image/aligned/` is absent.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=RAFDB_CLASSES),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://www.whdeng.cn/raf/model1.html',
    )

  def _split_generators(self, dl_manager):
    records = _read_splits(self, dl_manager, readers.read_rafdb, ('train', 'test'), subdir='basic')
    return {split: self._generate_examples(r) for split, r in records.items()}

  def _generate_examples(self, records: Records):
    for path, label in zip(records.paths, records.labels):
      name = os.path.basename(path)
      with open(path, 'rb') as f:  # the JPEG bytes as released, not re-encoded
        yield name, {'image': f.read(), 'label': int(label), 'file_name': name}


class Fer2013(tfds.core.GeneratorBasedBuilder):
  """FER2013 (Goodfellow et al., 2013): 48×48 grey faces, 7 expressions; train/val/test =
  Kaggle's Usage Training / PublicTest / PrivateTest (28,709 / 3,589 / 3,589)."""

  name = 'fer2013_manual'  # leaves 'fer2013' free should TFDS ever ship one
  code_path = _CODE_PATH
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'fer2013.csv read by lnl_jax.data.readers; one grey channel.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download `fer2013.csv` (columns emotion,pixels,Usage; 35,887 rows) from the Kaggle challenge
  "Challenges in Representation Learning: Facial Expression Recognition Challenge" and put it in
  the manual dir as `fer2013.csv` (or `fer2013/fer2013.csv`).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(FER2013_SIDE, FER2013_SIDE, 1)),  # PNG
            'label': tfds.features.ClassLabel(names=FER2013_CLASSES),
            'index': np.int32,  # row within the split, in fer2013.csv order
        }),
        supervised_keys=('image', 'label'),
        homepage=('https://www.kaggle.com/c/challenges-in-representation-learning-facial-'
                  'expression-recognition-challenge'),
    )

  def _split_generators(self, dl_manager):
    records = _read_splits(self, dl_manager, readers.read_fer2013_csv, ('train', 'val', 'test'))
    return {split: self._generate_examples(r) for split, r in records.items()}

  def _generate_examples(self, records: Records):
    # The reader replicates the grey face to 3 channels; one is stored.
    for i, (image, label) in enumerate(zip(records.images, records.labels)):
      yield i, {'image': image[..., :1], 'label': int(label), 'index': i}
