"""FER2013 (Kaggle CSV or class folders) and FERPlus (re-voted labels on FER2013's pixels)."""
from __future__ import annotations

import csv
import itertools
import os
import warnings

from absl import logging
import numpy as np

from lnl_jax.data import readers_common as common
from lnl_jax.data.records import Records
from lnl_jax.errors import DataError

# fer2013.csv `emotion` 0..6, in the dataset's own order.
FER2013_CLASSES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
FER2013_USAGE = {'train': 'Training', 'val': 'PublicTest', 'test': 'PrivateTest'}
FER2013_SIDE = 48
# fer2013new.csv vote columns in file order; the last two are not expressions.
FERPLUS_CLASSES = ('neutral', 'happiness', 'surprise', 'sadness', 'anger', 'disgust', 'fear',
                   'contempt')
FERPLUS_NON_EXPRESSION = ('unknown', 'NF')


def _fer2013_csv_path(path_or_root: str) -> str:
  if os.path.isdir(path_or_root):
    found = common.first_existing([os.path.join(path_or_root, 'fer2013.csv'),
                                   os.path.join(path_or_root, 'fer2013', 'fer2013.csv')])
    if found is None:
      raise DataError(f'FER2013: expected {common.show(path_or_root)}/fer2013.csv (Kaggle\'s '
                      'emotion,pixels,Usage file), which does not exist.')
    return found
  return common.require_file(path_or_root, 'FER2013 CSV')


def _csv_rows(path: str, columns: tuple[str, ...]):
  """Yields (line number, {column: value}) of a CSV whose header must hold `columns`."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in columns if c not in header]
    if missing:
      raise DataError(f'{common.show(path)}:1: header {",".join(header)!r} lacks the column(s) '
                      f'{", ".join(missing)}; expected {",".join(columns)}.')
    where = {c: header.index(c) for c in columns}
    for row in reader:
      if not row:
        continue
      if len(row) != len(header):
        raise DataError(f'{common.show(path)}:{reader.line_num}: {len(row)} columns, expected '
                        f'{len(header)} ({",".join(header)}).')
      yield reader.line_num, {c: row[i] for c, i in where.items()}


def _decode_pixels(text: str, where: str) -> np.ndarray:
  """48×48 uint8 from 2304 space-separated ints, else DataError naming `where`."""
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # numpy warns (then truncates) on a non-integer token
    try:
      values = np.fromstring(text, dtype=np.int64, sep=' ')
    except (ValueError, DeprecationWarning):
      raise DataError(f'{where}: pixels hold a token that is not an integer; expected '
                      f'{FER2013_SIDE * FER2013_SIDE} space-separated ints 0..255.') from None
  if values.size != FER2013_SIDE * FER2013_SIDE:
    raise DataError(f'{where}: {values.size} pixel values, expected '
                    f'{FER2013_SIDE * FER2013_SIDE} (48×48 grey).')
  if values.min() < 0 or values.max() > 255:
    raise DataError(f'{where}: pixel values outside 0..255.')
  return values.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE)


def _to_rgb(grey: list[np.ndarray]) -> np.ndarray:
  """(N, 48, 48, 3) uint8: the grey images replicated to three channels."""
  stack = np.stack(grey) if grey else np.zeros((0, FER2013_SIDE, FER2013_SIDE), np.uint8)
  return np.repeat(stack[..., None], 3, axis=-1)


def read_fer2013_csv(path_or_root: str, split: str) -> Records:
  """FER2013 from Kaggle's `fer2013.csv` (columns emotion,pixels,Usage), pixels in memory.

  Splits: train = Usage 'Training' (28,709), val = 'PublicTest' (3,589), test = 'PrivateTest'
  (3,589). Labels are the file's `emotion` 0..6 = angry, disgust, fear, happy, sad, surprise,
  neutral. `images` is (N, 48, 48, 3) uint8, the grey face replicated to three channels.
  """
  common.check_split('FER2013', split, FER2013_USAGE)
  path = _fer2013_csv_path(path_or_root)
  labels, grey = [], []
  for line, row in _csv_rows(path, ('emotion', 'pixels', 'Usage')):
    if row['Usage'].strip() != FER2013_USAGE[split]:
      continue
    where = f'{common.show(path)}:{line}'
    labels.append(common.parse_int(row['emotion'], where, 'emotion', 0, len(FER2013_CLASSES) - 1))
    grey.append(_decode_pixels(row['pixels'], where))
  if not labels:
    raise DataError(f'{common.show(path)} has no rows with Usage {FER2013_USAGE[split]!r}.')
  logging.info('FER2013: %d %s faces from %s.', len(labels), split, common.show(path))
  return Records(class_names=FER2013_CLASSES, labels=np.asarray(labels), images=_to_rgb(grey),
                 source=f'FER2013, {os.path.basename(path)}, {FER2013_USAGE[split]}')


def read_fer2013_folders(root: str, split: str) -> Records:
  """FER2013 exported as images: `root/{train,test}/<class>/*.jpg` (also `val/` when present).

  Class folders are the FER2013 names (angry, disgust, fear, happy, sad, surprise, neutral; any
  case, 'surprised'/'angry' spellings accepted) and labels follow FER2013's own order.
  """
  common.check_split('FER2013 folders', split, FER2013_USAGE)
  folder = common.require_dir(os.path.join(root, split), f'FER2013 {split} images')
  aliases = {'anger': 'angry', 'disgusted': 'disgust', 'fearful': 'fear', 'happiness': 'happy',
             'sadness': 'sad', 'surprised': 'surprise'}
  classes, paths, labels = common.read_class_folders(folder, FER2013_CLASSES, aliases, 'FER2013')
  logging.info('FER2013: %d %s images from %s.', len(paths), split, common.show(folder))
  return Records(class_names=classes, labels=np.asarray(labels), paths=np.asarray(paths, dtype=str),
                 source=f'FER2013, {split}/<class> folders')


def read_fer2013(root: str, split: str) -> Records:
  """FER2013 from `fer2013.csv` when present (or `root` is the CSV), else from class folders."""
  if os.path.isfile(root) or common.first_existing(
      [os.path.join(root, 'fer2013.csv'), os.path.join(root, 'fer2013', 'fer2013.csv')]):
    logging.info('FER2013: reading the CSV layout under %s.', common.show(root))
    return read_fer2013_csv(root, split)
  if os.path.isdir(os.path.join(root, 'train')) or os.path.isdir(os.path.join(root, 'test')):
    logging.info('FER2013: reading the class-folder layout under %s.', common.show(root))
    return read_fer2013_folders(root, split)
  raise DataError(f'FER2013: found neither {common.show(root)}/fer2013.csv nor the folders '
                  f'{common.show(root)}/train/<class>/ and test/<class>/.')


def read_ferplus(root: str, split: str) -> Records:
  """FERPlus: `fer2013new.csv` votes over FER2013's faces, read from `fer2013.csv` in `root`.

  fer2013new.csv's rows align with fer2013.csv's by order (their Usage columns must agree). Each
  face's label is the class with the most of the 10 votes (ties go to the earlier column); a face
  whose top vote is unknown or NF, or that has no expression vote, is dropped. Classes, in the
  file's column order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt.
  `soft_labels` is the face's vote distribution over those 8 classes. Splits as FER2013's.
  """
  common.check_split('FERPlus', split, FER2013_USAGE)
  common.require_dir(root, 'FERPlus root')
  votes_path = common.require_file(os.path.join(root, 'fer2013new.csv'), 'FERPlus votes', root)
  pixels_path = _fer2013_csv_path(root)
  columns = ('Usage',) + FERPLUS_CLASSES + FERPLUS_NON_EXPRESSION
  usage = FER2013_USAGE[split]
  labels, soft, grey = [], [], []
  dropped = 0
  pairs = itertools.zip_longest(_csv_rows(votes_path, columns),
                                _csv_rows(pixels_path, ('pixels', 'Usage')))
  for votes_row, pixel_row in pairs:
    if votes_row is None or pixel_row is None:
      raise DataError(f'{common.show(votes_path)} and {common.show(pixels_path)} have different '
                      'numbers of rows; FERPlus rows must align one-to-one with fer2013.csv rows.')
    (line, row), (pixel_line, pixel_row) = votes_row, pixel_row
    where = f'{common.show(votes_path)}:{line}'
    if row['Usage'].strip() != pixel_row['Usage'].strip():
      raise DataError(f'{where}: Usage {row["Usage"]!r} disagrees with {pixel_row["Usage"]!r} at '
                      f'{common.show(pixels_path)}:{pixel_line}; the two files are not aligned.')
    if row['Usage'].strip() != usage:
      continue
    counts = np.array([common.parse_int(row[c], where, f'{c} votes', 0, 10**6)
                       for c in columns[1:]])
    emotion = counts[:len(FERPLUS_CLASSES)]
    if emotion.sum() == 0 or np.argmax(counts) >= len(FERPLUS_CLASSES):
      dropped += 1
      continue
    labels.append(int(np.argmax(counts)))
    soft.append(emotion / emotion.sum())
    grey.append(_decode_pixels(pixel_row['pixels'], f'{common.show(pixels_path)}:{pixel_line}'))
  if not labels:
    raise DataError(f'{common.show(votes_path)} has no usable rows with Usage {usage!r}.')
  logging.info('FERPlus: %d %s faces (%d dropped as unknown/not a face).', len(labels), split,
               dropped)
  return Records(class_names=FERPLUS_CLASSES, labels=np.asarray(labels), images=_to_rgb(grey),
                 soft_labels=np.asarray(soft, np.float32), source=f'FERPlus majority, {usage}')
