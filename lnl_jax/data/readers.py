"""Readers of the real datasets' on-disk formats, and the registry that picks one by name.

Every reader lists one split's image files (or, for FER2013's CSV, its pixels) and labels as a
`Records`, with the class names in the dataset's own order; it never decodes images. Formats are
those of the public releases (see each reader's docstring); layouts that come in two flavours are
auto-detected and the choice is logged. Bad input raises `DataError` naming the path (and line).

  records = readers.read('rafdb', '/data/RAF-DB/basic', 'train')
  records = readers.read('ckplus', '/data/CK+', 'all', frames='peak_and_neutral')
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Callable

from lnl_jax.data.readers_common import read_image_folder
from lnl_jax.data.readers_fer import read_fer2013
from lnl_jax.data.readers_fer import read_fer2013_csv
from lnl_jax.data.readers_fer import read_fer2013_folders
from lnl_jax.data.readers_fer import read_ferplus
from lnl_jax.data.readers_lab import read_ckplus
from lnl_jax.data.readers_lab import read_jaffe
from lnl_jax.data.readers_lab import read_mmi
from lnl_jax.data.readers_wild import read_affectnet
from lnl_jax.data.readers_wild import read_rafdb
from lnl_jax.data.readers_wild import read_sfew
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError

__all__ = [
    'READERS', 'Reader', 'read', 'read_affectnet', 'read_ckplus', 'read_fer2013',
    'read_fer2013_csv', 'read_fer2013_folders', 'read_ferplus', 'read_image_folder', 'read_jaffe',
    'read_mmi', 'read_rafdb', 'read_sfew',
]


@dataclasses.dataclass(frozen=True)
class Reader:
  """A dataset reader called uniformly as `reader(root, split, **options)`.

  `splits` are the official splits; ('all',) marks a dataset read whole for k-fold CV. With
  `split_folders`, any other split name reads the class folders under `root/<split>`.
  """
  fn: Callable[..., Records]
  splits: tuple[str, ...]
  split_folders: bool = False

  @property
  def options(self) -> tuple[str, ...]:
    params = inspect.signature(self.fn).parameters
    return tuple(p for p in params if p not in ('root', 'path_or_root', 'split'))

  def __call__(self, root: str, split: str, **options) -> Records:
    unknown = sorted(set(options) - set(self.options))
    if unknown:
      raise ConfigError(f'{self.fn.__name__} has no option(s) {", ".join(unknown)}; its options: '
                        f'{", ".join(self.options) or "none"}.')
    if self.splits == ('all',):
      if split != 'all':
        if not self.split_folders:
          raise ConfigError(f'{self.fn.__name__} reads a dataset without official splits; use '
                            "split='all' and make folds with lnl_jax.data.splits.")
        root = os.path.join(root, split)
      return self.fn(root, **options)
    if split not in self.splits:
      raise ConfigError(f'{self.fn.__name__} has no split {split!r}; use one of '
                        f'{", ".join(self.splits)}.')
    return self.fn(root, split, **options)


READERS: dict[str, Reader] = {
    'rafdb': Reader(read_rafdb, ('train', 'test')),
    'fer2013': Reader(read_fer2013, ('train', 'val', 'test')),
    'ferplus': Reader(read_ferplus, ('train', 'val', 'test')),
    'affectnet': Reader(read_affectnet, ('train', 'test')),
    'sfew': Reader(read_sfew, ('train', 'val', 'test')),
    'ckplus': Reader(read_ckplus, ('all',)),
    'jaffe': Reader(read_jaffe, ('all',)),
    'mmi': Reader(read_mmi, ('all',), split_folders=True),
    'folder': Reader(read_image_folder, ('all',), split_folders=True),
}


def read(name: str, root: str, split: str, **options) -> Records:
  """The `split` of dataset `name` (a key of READERS) stored under `root`."""
  if name not in READERS:
    raise ConfigError(f'unknown dataset {name!r}; known datasets: {", ".join(READERS)}.')
  return READERS[name](root, split, **options)
