"""From a config's `data` block to the (train, test) `Records` of one run.

Datasets with an official test split use it (RAF-DB, AffectNet's validation set, SFEW's Val,
FER2013's PrivateTest); the others (CK+, MMI, JAFFE, flat class folders) are split into
`data.num_folds` folds by `splits.kfold_split`, subject-wise where the reader names subjects (CK+,
JAFFE) and stratified by class otherwise, and `data.fold` is the test fold.
"""
from __future__ import annotations

import os

import ml_collections
from absl import logging

from lnl_jax.data import readers, splits, synthetic
from lnl_jax.data.readers_common import listing
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

# config name -> (reader name, official (train, test) splits or None for k-fold)
DATASETS = {
    'raf': ('rafdb', ('train', 'test')),
    'affectnet': ('affectnet', ('train', 'test')),
    'sfew': ('sfew', ('train', 'test')),
    'fer2013': ('fer2013', ('train', 'test')),
    'ferplus': ('ferplus', ('train', 'test')),
    'ckplus': ('ckplus', None),
    'jaffe': ('jaffe', None),
    'mmi': ('mmi', None),
    'folder': ('folder', None),
}


def _options(name: str, data: ml_collections.ConfigDict) -> dict:
  if data.subject_pattern and name not in ('mmi', 'folder'):
    raise ConfigError(f'data.subject_pattern={data.subject_pattern!r} is read for MMI and class '
                      f'folders only; {name!r} names its subjects itself or has an official '
                      'test split.')
  if name in ('mmi', 'folder'):
    return dict(subject_pattern=data.subject_pattern or None)
  if name == 'affectnet':
    return dict(num_classes=data.num_classes)
  if name == 'ckplus':
    if data.num_classes not in (6, 7, 8):  # 6: CK+48, which holds no neutral faces
      raise ConfigError(f'CK+ data.num_classes={data.num_classes!r}; use 7 (neutral + 6 basic; 6 '
                        'on CK+48, which has no neutral faces) or 8 (+ contempt).')
    return dict(include_contempt=data.num_classes == 8)
  return {}


def load_splits(data: ml_collections.ConfigDict, seed: int, num_patches: int = 16,
                overlap: int = 16, cache_dir: str | None = None) -> tuple[Records, Records]:
  """The train and test records the config describes (synthetic faces need the patch grid, and
  are kept in `cache_dir` when one is given: `synthetic.load_or_generate`)."""
  if data.limit < 0:
    raise ConfigError(f'data.limit={data.limit} must be ≥ 0 (0 keeps every example).')
  if data.name == 'synthetic':
    for field in ('num_train', 'num_test'):
      if (value := data[field]) < 1:
        raise ConfigError(f'data.{field}={value!r}: the synthetic faces need at least 1 '
                          f'{field[4:]} face.')
    if data.root:
      logging.warning('data.root=%s is not read: data.name=synthetic draws its faces (set '
                      'data.name, or use configs/<dataset>.py, to read a dataset).', data.root)
    faces = synthetic.load_or_generate(
        data.num_train + data.num_test, image_size=data.image_size, seed=seed,
        num_patches=num_patches, overlap=overlap, occlusion_prob=data.occlusion_prob,
        cache_dir=cache_dir)
    train, test = faces.subset(slice(data.num_train)), faces.subset(slice(data.num_train, None))
  elif data.name in DATASETS:
    if not data.root:
      raise ConfigError(f'data.root is empty: point --config.data.root at your copy of {data.name!r} '
                        '(see the README for the layout each dataset expects).')
    reader, official = DATASETS[data.name]
    options = _options(data.name, data)
    if data.name == 'folder' and all(os.path.isdir(os.path.join(data.root, s)) for s in ('train', 'test')):
      official = ('train', 'test')
    if official:
      train, test = (readers.read(reader, data.root, s, **options) for s in official)
    else:
      train, test = splits.kfold_split(readers.read(reader, data.root, 'all', **options),
                                       data.num_folds, data.fold, seed)
  else:
    raise ConfigError(f'data.name={data.name!r} is unknown; known: synthetic, {", ".join(DATASETS)}.')
  if train.class_names != test.class_names:
    raise ConfigError(f'train and test classes differ: {train.class_names} vs {test.class_names}.')
  check_disjoint(train, test)
  if data.limit:
    train, test = train.limited(data.limit), test.limited(data.limit)
  logging.info('data: %s — %d train / %d test, classes %s', train.source or data.name, len(train),
               len(test), ', '.join(train.class_names))
  return train, test


def check_disjoint(train: Records, test: Records) -> None:
  """A file in both splits is a DataError (the test accuracy would be inflated); test files that
  are byte-identical copies of a train file of the same name get a warning. Files that merely share
  a name (`train/happy/0.png`, `test/happy/0.png`, as in many exports) are fine."""
  if train.paths is None or test.paths is None:
    return
  real_dirs = {}

  def real(path):  # symlinked folders resolved; one realpath per folder, not per file
    folder, name = os.path.split(str(path))
    if folder not in real_dirs:
      real_dirs[folder] = os.path.realpath(folder)
    return os.path.join(real_dirs[folder], name)

  train_files = {real(p) for p in train.paths}
  shared = [p for p in test.paths if real(p) in train_files]
  if shared:
    raise DataError(f'{len(shared)} test image(s) are also in the train split (the same file): '
                    f'{listing(shared)}; the test accuracy would be inflated. Check data.root and '
                    'the split folders.')
  by_name = {}
  for p in train.paths:
    by_name.setdefault(os.path.basename(p), []).append(p)
  copies = [p for p in test.paths
            if any(_same_bytes(p, q) for q in by_name.get(os.path.basename(p), ()))]
  if copies:
    logging.warning('%d test image(s) are byte-identical to the train image of the same name, e.g. '
                    '%s; the test accuracy may be inflated.', len(copies), listing(copies))


def _same_bytes(a: str, b: str) -> bool:
  try:
    if os.path.getsize(a) != os.path.getsize(b):
      return False
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      return fa.read() == fb.read()
  except OSError:
    return False  # a missing/unreadable file is the pipeline's to report
