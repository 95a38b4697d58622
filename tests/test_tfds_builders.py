"""The TFDS builders turn RAF-DB and FER2013 fixtures into the splits, labels and pixels written."""
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import fixtures
from lnl_jax.data import tfds_builders
from lnl_jax.errors import DataError

RAF_CLASSES = ['surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral']
FER_CLASSES = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']


def _load(name, data_dir, manual_dir, **kwargs):
  """The README's call: tfds.load by registered name, prepared from `manual_dir`."""
  return tfds.load(name, data_dir=str(data_dir), download_and_prepare_kwargs={
      'download_config': tfds.download.DownloadConfig(manual_dir=str(manual_dir))}, **kwargs)


def _by(key, ds):
  """The examples of `ds` as numpy dicts, sorted by `key` (TFDS stores them in hashed order)."""
  return sorted(tfds.as_numpy(ds), key=lambda ex: ex[key])


def test_raf_db_splits_labels_and_jpeg_bytes(tmp_path):
  basic = fixtures.write_rafdb(str(tmp_path / 'manual' / 'basic'), [1, 7, 3, 5], [6, 2])
  ds, info = _load('raf_db', tmp_path / 'tfds', tmp_path / 'manual', with_info=True,
                   decoders={'image': tfds.decode.SkipDecoding()})
  assert info.features['label'].names == RAF_CLASSES
  assert info.version == '1.0.0'
  assert {s: info.splits[s].num_examples for s in ('train', 'test')} == {'train': 4, 'test': 2}
  train, test = _by('file_name', ds['train']), _by('file_name', ds['test'])
  assert [ex['label'] for ex in train] == [0, 6, 2, 4]  # file labels 1..7 -> 0..6
  assert [ex['label'] for ex in test] == [5, 1]
  first = os.path.join(basic, 'Image', 'aligned', 'test_00001_aligned.jpg')
  assert test[0]['file_name'] == b'test_00001_aligned.jpg'
  with open(first, 'rb') as f:
    assert test[0]['image'] == f.read()  # the released JPEG, not re-encoded
  decoded = info.features['image'].decode_example(test[0]['image']).numpy()
  expected = np.asarray(Image.open(first).convert('RGB'), np.int16)
  assert decoded.shape == (12, 12, 3)
  error = np.abs(decoded.astype(np.int16) - expected)  # TF and PIL upsample chroma differently
  assert error.mean() < 2 and error.max() <= 8


def test_fer2013_splits_labels_and_pixels(tmp_path):
  usages = ['Training', 'PublicTest', 'Training', 'PrivateTest', 'Training', 'PrivateTest']
  pixels = fixtures.write_fer2013_csv(str(tmp_path / 'manual' / 'fer2013.csv'),
                                      [0, 6, 3, 2, 5, 1], usages)
  ds, info = _load('fer2013_manual', tmp_path / 'tfds', tmp_path / 'manual', with_info=True)
  assert info.features['label'].names == FER_CLASSES
  assert {s: n.num_examples for s, n in info.splits.items()} == {'train': 3, 'val': 1, 'test': 2}
  train, test = _by('index', ds['train']), _by('index', ds['test'])
  assert [ex['label'] for ex in train] == [0, 3, 5]
  assert [ex['label'] for ex in test] == [2, 1]
  assert [ex['label'] for ex in tfds.as_numpy(ds['val'])] == [6]
  assert train[1]['image'].shape == (48, 48, 1)
  np.testing.assert_array_equal(train[1]['image'][..., 0], pixels[2])  # PNG is lossless
  np.testing.assert_array_equal(test[1]['image'][..., 0], pixels[5])


def test_missing_or_wrong_manual_dir_points_at_instructions(tmp_path):
  with pytest.raises(DataError, match=r'(?s)does not exist or is empty.*list_patition_label\.txt'):
    _load('raf_db', tmp_path / 'tfds', tmp_path / 'nowhere')
  fixtures.write_text(str(tmp_path / 'manual' / 'README.txt'), 'not the csv\n')
  with pytest.raises(DataError, match=r'(?s)fer2013_manual: FER2013: expected .*manual/fer2013'
                                      r'\.csv.*must be prepared as follows.*Kaggle'):
    tfds_builders.Fer2013(data_dir=str(tmp_path / 'tfds')).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / 'manual')))


def test_raf_db_manual_dir_may_be_the_basic_folder_itself(tmp_path):
  """The instructions allow the release's `basic/` folder as the manual dir, as well as a folder
  holding it."""
  fixtures.write_rafdb(str(tmp_path / 'basic'), [2, 7, 1], [4])
  ds = _load('raf_db', tmp_path / 'tfds', tmp_path / 'basic', split='train',
             decoders={'image': tfds.decode.SkipDecoding()})
  assert sorted(ex['label'] for ex in tfds.as_numpy(ds)) == [0, 1, 6]
