"""Lab-posed datasets without an official split (evaluated by k-fold CV): CK+, JAFFE, MMI.

Each returns one 'all' Records with `subjects` set where the format carries them, so that
`splits.kfold_split` keeps every subject's images on one side of a fold.
"""
from __future__ import annotations

import os
import re

from absl import logging
import numpy as np

from lnl_jax.data import readers_common as common
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

# CK+ Emotion/*_emotion.txt codes 0..7 (0 neutral never occurs there; first frames are neutral).
CKPLUS_CLASSES = ('neutral', 'anger', 'contempt', 'disgust', 'fear', 'happy', 'sadness',
                  'surprise')
CKPLUS_FRAMES = ('peak_and_neutral', 'peak', 'last3')
CKPLUS_ALIASES = {'angry': 'anger', 'happiness': 'happy', 'sad': 'sadness',
                  'surprised': 'surprise', 'disgusted': 'disgust', 'fearful': 'fear'}
CKPLUS_SUBJECT = re.compile(r'^(S\d+)_(\d+)_(\d+)')  # S010_004_00000017.png
# JAFFE expression codes (file names KA.AN1.39.tiff), alphabetical as the release lists them.
JAFFE_CODES = ('AN', 'DI', 'FE', 'HA', 'NE', 'SA', 'SU')
JAFFE_CLASSES = ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')
JAFFE_NAME = re.compile(r'^([A-Za-z]+)\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?$', re.IGNORECASE)


def _ckplus_classes(frames: str, include_contempt: bool) -> tuple[str, ...]:
  # Only 'peak_and_neutral' takes neutral faces (the sequences' first frames).
  classes = CKPLUS_CLASSES if frames == 'peak_and_neutral' else CKPLUS_CLASSES[1:]
  return tuple(c for c in classes if include_contempt or c != 'contempt')


def _read_emotion(path: str) -> int:
  """The CK+ code 1..7 in an `*_emotion.txt` file (one float such as '   3.0000000e+00')."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [(n, l.strip()) for n, l in enumerate(f, 1) if l.strip()]
  if len(lines) != 1:
    raise DataError(f'{common.show(path)}: {len(lines)} non-empty lines, expected one float 1..7.')
  line, text = lines[0]
  where = f'{common.show(path)}:{line}'
  try:
    value = float(text)
  except ValueError:
    raise DataError(f'{where}: {text!r} is not a number; expected an emotion code 1..7.') from None
  if value != int(value):
    raise DataError(f'{where}: {text!r} is not a whole number; expected an emotion code 1..7.')
  return common.parse_int(str(int(value)), where, 'emotion code', 1, len(CKPLUS_CLASSES) - 1)


def _ckplus_sequences(root: str, frames: str, include_contempt: bool) -> Records:
  """The original release: `cohn-kanade-images/Sxxx/yyy/*.png` + `Emotion/.../*_emotion.txt`."""
  images = common.first_existing([
      os.path.join(root, 'cohn-kanade-images'),
      os.path.join(root, 'extended-cohn-kanade-images', 'cohn-kanade-images')])
  emotions = common.first_existing([os.path.join(root, 'Emotion'),
                                    os.path.join(root, 'Emotion_labels', 'Emotion')])
  if images is None:
    raise DataError(f'CK+: expected the image folder {common.show(root)}/cohn-kanade-images/'
                    'Sxxx/yyy/*.png, which does not exist.')
  if emotions is None:
    raise DataError(f'CK+: expected the label folder {common.show(root)}/Emotion/Sxxx/yyy/'
                    '*_emotion.txt next to cohn-kanade-images/, which does not exist.')
  classes = _ckplus_classes(frames, include_contempt)
  paths, labels, subjects = [], [], []
  for subject in common.subdirectories(emotions):
    for sequence in common.subdirectories(os.path.join(emotions, subject)):
      label_dir = os.path.join(emotions, subject, sequence)
      label_files = [n for n in sorted(os.listdir(label_dir)) if n.endswith('_emotion.txt')]
      if not label_files:
        continue  # 266 of the 593 sequences carry no emotion label
      label_path = os.path.join(label_dir, label_files[0])
      emotion = CKPLUS_CLASSES[_read_emotion(label_path)]
      if emotion not in classes:
        continue  # contempt when it is left out
      sequence_dir = os.path.join(images, subject, sequence)
      if not os.path.isdir(sequence_dir):
        raise DataError(f'CK+: {common.show(label_path)} labels the sequence '
                        f'{common.show(sequence_dir)}, which does not exist.')
      sequence_frames = common.list_images(sequence_dir)
      peak = os.path.join(sequence_dir, label_files[0][:-len('_emotion.txt')] + '.png')
      if peak not in sequence_frames:
        raise DataError(f'CK+: {common.show(label_path)} labels the frame {common.show(peak)}, '
                        'which does not exist.')
      peak_index = sequence_frames.index(peak)
      chosen = {'peak_and_neutral': [peak], 'peak': [peak],
                'last3': sequence_frames[max(peak_index - 2, 0):peak_index + 1]}[frames]
      if frames == 'peak_and_neutral':
        paths.append(sequence_frames[0])
        labels.append(classes.index('neutral'))
        subjects.append(subject)
      paths += chosen
      labels += [classes.index(emotion)] * len(chosen)
      subjects += [subject] * len(chosen)
  if not paths:
    raise DataError(f'CK+: no labelled sequences in {common.show(emotions)}.')
  return Records(class_names=classes, labels=np.asarray(labels), paths=np.asarray(paths, dtype=str),
                 subjects=np.asarray(subjects, dtype=str),
                 source=f'CK+, cohn-kanade-images, {frames}')


def _ckplus_folders(root: str, include_contempt: bool) -> Records:
  """The pre-cropped CK+48 variant: class folders of PNGs named `S010_004_00000017.png`."""
  folder_classes, paths, labels = common.read_class_folders(root, CKPLUS_CLASSES, CKPLUS_ALIASES,
                                                            'CK+48')
  present = sorted(set(labels))
  keep = [l for l in present if include_contempt or folder_classes[l] != 'contempt']
  classes = tuple(folder_classes[l] for l in keep)
  chosen = [i for i, l in enumerate(labels) if l in keep]
  paths = [paths[i] for i in chosen]
  labels = [keep.index(labels[i]) for i in chosen]
  unmatched = [p for p in paths if not CKPLUS_SUBJECT.match(os.path.basename(p))]
  if unmatched:
    raise DataError(f'CK+48: {len(unmatched)} file name(s) lack the Sxxx_yyy_zzzzzzzz subject '
                    f'prefix needed for subject-wise folds: {common.listing(unmatched)}.')
  subjects = [CKPLUS_SUBJECT.match(os.path.basename(p)).group(1) for p in paths]
  return Records(class_names=classes, labels=np.asarray(labels), paths=np.asarray(paths, dtype=str),
                 subjects=np.asarray(subjects, dtype=str), source='CK+48 class folders')


def read_ckplus(root: str, frames: str = 'peak_and_neutral',
                include_contempt: bool = False) -> Records:
  """CK+ as one 'all' split, subjects = the `Sxxx` prefix (folds must be subject-wise).

  Layouts, auto-detected: the original `cohn-kanade-images/Sxxx/yyy/*.png` with
  `Emotion/Sxxx/yyy/*_emotion.txt` (codes 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy,
  6 sadness, 7 surprise; only the 327 sequences with such a file are used), and the CK+48 variant
  (class folders of `S010_004_00000017.png`, its frames already chosen, so `frames` is ignored).

  Args:
    root: the dataset directory.
    frames: 'peak_and_neutral' (the paper: first frame as neutral + the labelled peak frame, 618
      images without contempt), 'peak' (the peak frame only; no neutral class) or 'last3' (the
      peak frame and the two before it, labelled alike; no neutral class).
    include_contempt: keep contempt (8 classes: neutral, anger, contempt, disgust, fear, happy,
      sadness, surprise); the paper's 7 leave it out (its sequences are dropped entirely).
  """
  if frames not in CKPLUS_FRAMES:
    raise ConfigError(f'CK+ frames={frames!r}; use one of {", ".join(CKPLUS_FRAMES)}.')
  common.require_dir(root, 'CK+ root')
  if common.first_existing([os.path.join(root, 'cohn-kanade-images'),
                            os.path.join(root, 'extended-cohn-kanade-images')]):
    logging.info('CK+: reading the cohn-kanade-images + Emotion layout, frames=%s.', frames)
    records = _ckplus_sequences(root, frames, include_contempt)
  else:
    logging.info('CK+: no cohn-kanade-images/ in %s; reading CK+48 class folders.',
                 common.show(root))
    records = _ckplus_folders(root, include_contempt)
  logging.info('CK+: %d images of %d subjects.', len(records), len(set(records.subjects)))
  return records


def read_jaffe(root: str) -> Records:
  """JAFFE: TIFFs named `<subject>.<code><index>.<number>.tiff`, e.g. `KA.AN1.39.tiff`.

  Codes AN, DI, FE, HA, NE, SA, SU map to 0..6 = anger, disgust, fear, happiness, neutral,
  sadness, surprise; subject = the name's prefix (KA). Reads `root` or, when it holds no TIFFs,
  its `jaffe/` folder. Non-TIFF files (the README) are ignored.
  """
  common.require_dir(root, 'JAFFE root')
  folder = root
  is_tiff = lambda n: not n.startswith('.') and n.lower().endswith(('.tif', '.tiff'))
  if not any(is_tiff(n) for n in os.listdir(root)) and os.path.isdir(os.path.join(root, 'jaffe')):
    folder = os.path.join(root, 'jaffe')
  names = [n for n in sorted(os.listdir(folder)) if is_tiff(n)]
  if not names:
    raise DataError(f'JAFFE: no .tiff images in {common.show(folder)}; expected files named like '
                    'KA.AN1.39.tiff.')
  paths, labels, subjects, bad = [], [], [], []
  for name in names:
    m = JAFFE_NAME.match(name)
    if m is None or m.group(2).upper() not in JAFFE_CODES:
      bad.append(name)
      continue
    paths.append(os.path.join(folder, name))
    labels.append(JAFFE_CODES.index(m.group(2).upper()))
    subjects.append(m.group(1).upper())
  if bad:
    raise DataError(f'JAFFE: {len(bad)} file name(s) in {common.show(folder)} are not '
                    f'<subject>.<code><index>.<number>.tiff with a code in '
                    f'{", ".join(JAFFE_CODES)}: {common.listing(bad)}.')
  logging.info('JAFFE: %d images of %d subjects.', len(paths), len(set(subjects)))
  return Records(class_names=JAFFE_CLASSES, labels=np.asarray(labels),
                 paths=np.asarray(paths, dtype=str), subjects=np.asarray(subjects, dtype=str),
                 source='JAFFE')


def read_mmi(root: str, class_names: tuple[str, ...] | None = None,
             subject_pattern: str | None = None) -> Records:
  """MMI, which has no fixed layout: class folders `root/<class>/<image>` (the usual export).

  Pass `subject_pattern` (a regex on file names, see `read_image_folder`) for subject-wise folds;
  without it `subjects` is None and folds are stratified by class only.
  """
  return common.read_image_folder(root, class_names, subject_pattern, name='MMI')
