"""Helpers every dataset reader shares: path checks, error messages, class-folder layouts.

Readers only list files and labels; decoding the images is the pipeline's job. File names are
handled as `str` as the OS gives them: on POSIX a name that is not valid UTF-8 arrives with its bad
bytes as surrogate escapes (PEP 383), which `open`/`os.stat` turn back into the same bytes, so such
files are listed, never crashed on; messages show them with `show()`.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, Sequence

from absl import logging
import numpy as np

from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.gif', '.webp')
MAX_LISTED = 5  # how many offending files an error message names before giving only the count


def show(path: str) -> str:
  """`path` printable in any terminal: undecodable bytes (surrogate escapes) as \\xNN."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


def listing(items: Sequence[str]) -> str:
  """'a, b, c' for an error message, the first MAX_LISTED items then how many more."""
  head = ', '.join(show(str(x)) for x in items[:MAX_LISTED])
  more = len(items) - MAX_LISTED
  return head + (f' and {more} more' if more > 0 else '')


def check_split(dataset: str, split: str, splits: Iterable[str]) -> None:
  splits = tuple(splits)
  if split not in splits:
    raise ConfigError(f'{dataset} has no split {split!r}; use one of {", ".join(splits)}.')


def require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise DataError(f'{what}: expected the directory {show(path)}, which does not exist.')
  return path


def require_file(path: str, what: str, root: str | None = None) -> str:
  """`path`, or a DataError naming it; with the dataset's `root` (a folder above `path`), the
  message also names a folder of root that holds the file at the same place (a root set one level
  too high, e.g. RAF-DB/ for RAF-DB/basic/)."""
  if not os.path.isfile(path):
    hint = ''
    if root is not None:
      relative = os.path.relpath(path, root)
      try:
        below = sorted(d for d in os.listdir(root)
                       if os.path.isfile(os.path.join(root, d, relative)))
      except OSError:  # root missing or unreadable: the message names the file alone
        below = []
      if below:
        hint = f' It is in {show(os.path.join(root, below[0]))}: set data.root to that folder.'
    raise DataError(f'{what}: expected the file {show(path)}, which does not exist.{hint}')
  return path


def first_existing(candidates: Sequence[str]) -> str | None:
  """The first of `candidates` that exists (file or directory), else None."""
  return next((c for c in candidates if os.path.exists(c)), None)


def is_image(name: str) -> bool:
  return not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(directory: str) -> list[str]:
  """Sorted full paths of the image files directly inside `directory` (hidden files skipped)."""
  return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
          if is_image(n) and os.path.isfile(os.path.join(directory, n))]


def subdirectories(directory: str) -> list[str]:
  """Sorted names of the non-hidden subdirectories of `directory`."""
  return [n for n in sorted(os.listdir(directory))
          if not n.startswith('.') and os.path.isdir(os.path.join(directory, n))]


def check_files_exist(paths: Sequence[str], named_in: str) -> None:
  """DataError naming the files in `paths` that do not exist (one directory listing per folder)."""
  listed: dict[str, set[str]] = {}
  missing = []
  for path in paths:
    folder, name = os.path.split(path)
    if folder not in listed:
      listed[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    if name not in listed[folder]:
      missing.append(path)
  if missing:
    raise DataError(f'{named_in} names {len(missing)} image(s) that do not exist: '
                    f'{listing(missing)}.')


def parse_int(text: str, where: str, what: str, low: int, high: int) -> int:
  """int(`text`) in [low, high], else DataError naming `where` ('file:line') and the range."""
  try:
    value = int(text.strip())
  except ValueError:
    raise DataError(f'{where}: {what} {text.strip()!r} is not an integer; expected '
                    f'{low}..{high}.') from None
  if not low <= value <= high:
    raise DataError(f'{where}: {what} {value} is out of range; expected {low}..{high}.')
  return value


def match_subjects(paths: Sequence[str], pattern: str | None) -> np.ndarray | None:
  """Subject id of each file from regex `pattern` on its file name: group 'subject', else group 1,
  else the whole match. None when `pattern` is None."""
  if pattern is None:
    return None
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise ConfigError(f'the subject pattern {pattern!r} is not a regular expression ({e}).'
                      ) from None
  subjects, unmatched = [], []
  for path in paths:
    m = regex.search(os.path.basename(path))
    if m is None:
      unmatched.append(path)
      continue
    if 'subject' in regex.groupindex:
      subjects.append(m.group('subject'))
    else:
      subjects.append(m.group(1) if regex.groups else m.group(0))
  if unmatched:
    raise DataError(f'{len(unmatched)} file name(s) do not match the subject pattern '
                    f'{pattern!r}: {listing(unmatched)}.')
  return np.asarray(subjects, dtype=str)


def read_class_folders(
    root: str, class_names: Sequence[str] | None = None, aliases: Mapping[str, str] | None = None,
    what: str = 'image folders') -> tuple[tuple[str, ...], list[str], list[int]]:
  """(class names, paths, labels) of a `root/<class>/<image>` layout.

  With fixed `class_names` a folder maps to the class of the same name, ignoring case, or through
  `aliases` (lower-case folder name -> class name); any other folder is a DataError listing the
  expected names, and the class order is `class_names`. Without, the classes are the non-empty
  folders in sorted order. Empty folders are skipped with a warning; all empty is a DataError.
  """
  require_dir(root, what)
  folders = subdirectories(root)
  if class_names is None:
    index = {f: None for f in folders}
  else:
    lookup = {c.lower(): c for c in class_names}
    lookup.update({k.lower(): v for k, v in (aliases or {}).items()})
    unknown = [f for f in folders if f.lower() not in lookup]
    if unknown:
      raise DataError(f'{what}: unknown class folder(s) {listing(unknown)} in {show(root)}; '
                      f'expected folders named {", ".join(class_names)}.')
    index = {f: class_names.index(lookup[f.lower()]) for f in folders}
  found: dict[str, list[str]] = {}
  for folder in folders:
    images = list_images(os.path.join(root, folder))
    if images:
      found[folder] = images
    else:
      logging.warning('%s: skipping the class folder %s, which holds no images.', what,
                      show(os.path.join(root, folder)))
  if not found:
    raise DataError(f'{what}: no images ({"/".join(IMAGE_EXTENSIONS)}) in any class folder of '
                    f'{show(root)}; expected {show(root)}/<class>/<image>.')
  if class_names is None:
    class_names = sorted(found)
    index = {f: i for i, f in enumerate(class_names)}
  paths, labels = [], []
  for folder, images in found.items():
    paths += images
    labels += [index[folder]] * len(images)
  return tuple(class_names), paths, labels


def read_image_folder(root: str, class_names: Sequence[str] | None = None,
                      subject_pattern: str | None = None, name: str = 'image folder') -> Records:
  """Generic `root/<class>/<image>` dataset (jpg/jpeg/png/bmp/tif/tiff/gif/webp, any case).

  Args:
    root: directory holding one folder per class.
    class_names: fixed class order (folders matched ignoring case); default: sorted folder names.
    subject_pattern: optional regex taking the subject id from each file name (named group
      'subject', else group 1, else the whole match), for subject-wise folds.
    name: dataset name for messages and `Records.source`.
  """
  classes, paths, labels = read_class_folders(root, class_names, what=name)
  logging.info('%s: %d images in %d classes from %s.', name, len(paths), len(classes), show(root))
  return Records(class_names=classes, labels=np.asarray(labels), paths=np.asarray(paths, dtype=str),
                 subjects=match_subjects(paths, subject_pattern), source=f'{name}, {show(root)}')
