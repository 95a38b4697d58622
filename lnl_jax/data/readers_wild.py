"""In-the-wild datasets with official splits: RAF-DB basic, AffectNet, SFEW 2.0."""
from __future__ import annotations

import csv
import os

from absl import logging
import numpy as np

from lnl_jax.data import readers_common as common
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

# list_patition_label.txt labels 1..7, in the dataset's own order (label k -> class k-1).
RAFDB_CLASSES = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
RAFDB_LABELS = os.path.join('EmoLabel', 'list_patition_label.txt')  # (sic)
# AffectNet `expression` 0..10; the first 7 (or 8, with contempt) are kept, labels unchanged.
AFFECTNET_CLASSES = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger', 'contempt')
AFFECTNET_EXPRESSIONS = 11  # 8 None, 9 Uncertain, 10 No-Face
AFFECTNET_LISTS = {'train': 'training.csv', 'test': 'validation.csv'}
AFFECTNET_COLUMNS = ('subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height',
                     'facial_landmarks', 'expression', 'valence', 'arousal')
AFFECTNET_SPLIT_DIRS = {'train': 'train_set', 'test': 'val_set'}
# SFEW 2.0 class folders (alphabetical, the release's own order).
SFEW_CLASSES = ('Angry', 'Disgust', 'Fear', 'Happy', 'Neutral', 'Sad', 'Surprise')
SFEW_DIRS = {'train': os.path.join('Train', 'Train_Aligned_Faces'),
             'val': os.path.join('Val', 'Val_Aligned_Faces')}


def read_rafdb(root: str, split: str) -> Records:
  """RAF-DB basic: `EmoLabel/list_patition_label.txt` lines like `train_00001.jpg 5`.

  Labels 1..7 map to 0..6 = surprise, fear, disgust, happiness, sadness, anger, neutral. Splits:
  train (12,271 `train_*` names) and test (3,068 `test_*`). Images are read from
  `Image/aligned/<stem>_aligned.jpg` when that folder exists, else `Image/original/<name>`.
  """
  common.check_split('RAF-DB', split, ('train', 'test'))
  common.require_dir(root, 'RAF-DB root')
  label_path = common.require_file(os.path.join(root, RAFDB_LABELS), 'RAF-DB labels', root)
  aligned = os.path.join(root, 'Image', 'aligned')
  original = os.path.join(root, 'Image', 'original')
  if os.path.isdir(aligned):
    layout, image_path = 'Image/aligned', lambda n: os.path.join(
        aligned, os.path.splitext(n)[0] + '_aligned.jpg')
  elif os.path.isdir(original):
    layout, image_path = 'Image/original', lambda n: os.path.join(original, n)
  else:
    raise DataError(f'RAF-DB: expected the image folder {common.show(aligned)} or '
                    f'{common.show(original)}; neither exists.')
  logging.info('RAF-DB: reading images from %s.', layout)
  paths, labels = [], []
  with open(label_path, encoding='utf-8', errors='surrogateescape') as f:
    for line_number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      where = f'{common.show(label_path)}:{line_number}'
      if len(fields) != 2:
        raise DataError(f'{where}: {len(fields)} columns, expected 2 (`train_00001.jpg 5`).')
      name, label = fields
      if name.startswith(split + '_'):
        paths.append(image_path(name))
        labels.append(common.parse_int(label, where, 'label', 1, len(RAFDB_CLASSES)) - 1)
  if not paths:
    raise DataError(f'{common.show(label_path)} lists no `{split}_*` images.')
  common.check_files_exist(paths, common.show(label_path))
  return Records(class_names=RAFDB_CLASSES, labels=np.asarray(labels),
                 paths=np.asarray(paths, dtype=str), source=f'RAF-DB basic, {layout}, {split}')


def _affectnet_csv(root: str, split: str, num_classes: int) -> Records:
  """The original release: CSV file lists + `Manually_Annotated_Images/<subDirectory_filePath>`."""
  list_path = common.require_file(
      os.path.join(root, 'Manually_Annotated_file_lists', AFFECTNET_LISTS[split]),
      'AffectNet file list', root)
  images = common.first_existing([
      os.path.join(root, 'Manually_Annotated_Images'),
      os.path.join(root, 'Manually_Annotated', 'Manually_Annotated_Images')])
  if images is None:
    raise DataError(f'AffectNet: expected the image folder '
                    f'{common.show(root)}/Manually_Annotated_Images, which does not exist.')
  column = {c: i for i, c in enumerate(AFFECTNET_COLUMNS)}
  paths, labels, boxes = [], [], []
  with open(list_path, newline='', encoding='utf-8-sig', errors='surrogateescape') as f:
    reader = csv.reader(f)
    for row in reader:
      where = f'{common.show(list_path)}:{reader.line_num}'
      if not row:
        continue
      if reader.line_num == 1 and row[0].strip() == AFFECTNET_COLUMNS[0]:
        column = {c.strip(): i for i, c in enumerate(row)}  # header; some releases have none
        missing = [c for c in AFFECTNET_COLUMNS if c not in column]
        if missing:
          raise DataError(f'{where}: header lacks {", ".join(missing)}; expected '
                          f'{",".join(AFFECTNET_COLUMNS)}.')
        continue
      if len(row) != len(column):
        raise DataError(f'{where}: {len(row)} columns, expected {len(column)} '
                        f'({",".join(AFFECTNET_COLUMNS)}).')
      label = common.parse_int(row[column['expression']], where, 'expression', 0,
                               AFFECTNET_EXPRESSIONS - 1)
      if label >= num_classes:
        continue
      box = [common.parse_int(row[column[c]], where, c, 0, 10**6)
             for c in ('face_y', 'face_x', 'face_height', 'face_width')]
      paths.append(os.path.join(images, row[column['subDirectory_filePath']].strip()))
      labels.append(label)
      boxes.append(box)
  if not paths:
    raise DataError(f'{common.show(list_path)} lists no images with expression < {num_classes}.')
  common.check_files_exist(paths, common.show(list_path))
  return Records(class_names=AFFECTNET_CLASSES[:num_classes], labels=np.asarray(labels),
                 paths=np.asarray(paths, dtype=str), boxes=np.asarray(boxes, np.int32),
                 source=f'AffectNet, Manually_Annotated file lists, {AFFECTNET_LISTS[split]}')


def _affectnet_npy(root: str, split: str, num_classes: int) -> Records:
  """The newer release: `<split>_set/images/N.jpg` + `<split>_set/annotations/N_exp.npy`."""
  split_dir = common.require_dir(os.path.join(root, AFFECTNET_SPLIT_DIRS[split]),
                                 f'AffectNet {split}')
  image_dir = common.require_dir(os.path.join(split_dir, 'images'), 'AffectNet images')
  annotation_dir = common.require_dir(os.path.join(split_dir, 'annotations'),
                                      'AffectNet annotations')
  paths, labels = [], []
  for image in common.list_images(image_dir):
    stem = os.path.splitext(os.path.basename(image))[0]
    exp_path = os.path.join(annotation_dir, f'{stem}_exp.npy')
    if not os.path.isfile(exp_path):
      raise DataError(f'AffectNet: {common.show(image)} has no annotation '
                      f'{common.show(exp_path)}.')
    try:
      text = str(np.load(exp_path).item())  # stored as a string scalar such as '3'
    except (OSError, ValueError) as e:
      raise DataError(f'AffectNet: cannot read {common.show(exp_path)}: {e}') from None
    label = common.parse_int(text, common.show(exp_path), 'expression', 0,
                             AFFECTNET_EXPRESSIONS - 1)
    if label < num_classes:
      paths.append(image)
      labels.append(label)
  if not paths:
    raise DataError(f'AffectNet: no images with expression < {num_classes} in '
                    f'{common.show(image_dir)}.')
  return Records(class_names=AFFECTNET_CLASSES[:num_classes], labels=np.asarray(labels),
                 paths=np.asarray(paths, dtype=str),
                 source=f'AffectNet, {AFFECTNET_SPLIT_DIRS[split]}/images + annotations')


def read_affectnet(root: str, split: str, num_classes: int = 7) -> Records:
  """AffectNet (manually annotated), train = training list, test = the validation list.

  Expressions 0..10 = neutral, happy, sad, surprise, fear, disgust, anger, contempt, none,
  uncertain, no-face; `num_classes` 7 keeps 0..6 (the paper's neutral + 6 basic), 8 adds contempt;
  labels keep the file's numbering. Two layouts, auto-detected: the original
  `Manually_Annotated_file_lists/{training,validation}.csv` with images under
  `Manually_Annotated_Images/`, whose `boxes` are the face boxes (face_y, face_x, face_height,
  face_width) = (top, left, height, width); and the newer `train_set`/`val_set` folders of
  `images/N.jpg` + `annotations/N_exp.npy`, faces pre-cropped (no boxes).
  """
  common.check_split('AffectNet', split, AFFECTNET_LISTS)
  if num_classes not in (7, 8):
    raise ConfigError(f'AffectNet num_classes={num_classes}; use 7 (neutral + 6 basic) or 8 '
                      '(with contempt).')
  common.require_dir(root, 'AffectNet root')
  if os.path.isdir(os.path.join(root, 'Manually_Annotated_file_lists')):
    logging.info('AffectNet: reading the Manually_Annotated_file_lists CSV layout.')
    return _affectnet_csv(root, split, num_classes)
  if any(os.path.isdir(os.path.join(root, d)) for d in AFFECTNET_SPLIT_DIRS.values()):
    logging.info('AffectNet: reading the train_set/val_set images + annotations layout.')
    return _affectnet_npy(root, split, num_classes)
  raise DataError(f'AffectNet: expected {common.show(root)}/Manually_Annotated_file_lists/ (CSV '
                  'release) or train_set/ and val_set/ (images + annotations release); found '
                  'neither.')


def read_sfew(root: str, split: str) -> Records:
  """SFEW 2.0 aligned faces: `Train/Train_Aligned_Faces/<Class>/*.png`, `Val/Val_Aligned_Faces/...`.

  Classes: Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise. The test labels were never
  released, so split test reads Val (the paper's 436 test images); val is the same set.
  """
  common.check_split('SFEW', split, ('train', 'val', 'test'))
  common.require_dir(root, 'SFEW root')
  folder = os.path.join(root, SFEW_DIRS['train' if split == 'train' else 'val'])
  classes, paths, labels = common.read_class_folders(folder, SFEW_CLASSES, what='SFEW')
  logging.info('SFEW: %d %s faces from %s.', len(paths), split, common.show(folder))
  return Records(class_names=classes, labels=np.asarray(labels), paths=np.asarray(paths, dtype=str),
                 source=f'SFEW 2.0, {SFEW_DIRS["train" if split == "train" else "val"]}')
