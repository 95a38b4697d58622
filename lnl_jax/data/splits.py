"""Train/test splits for datasets without an official test split (CK+, MMI, JAFFE: k-fold CV).

The split is a pure function of the records' content and the seed: examples are first put in
a canonical order (by path, or by a hash of the pixels, then label and subject), so the same
dataset listed in any order gives the same split. When `records.subjects` is set the split is
subject-wise (no subject in two folds): whole subjects are dealt greedily, largest first (the seed
orders equally large ones), each to the fold that keeps every class closest to its target share.
Otherwise it is stratified: each class is shuffled and dealt round-robin, so per-fold class counts
differ by at most one.
"""
from __future__ import annotations

import hashlib

import numpy as np

from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError


def canonical_order(records: Records) -> np.ndarray:
  """Indices sorting `records` by (path or pixel hash, label, subject), whatever their order."""
  if records.paths is not None:
    key = records.paths.astype(str)
  else:
    key = np.array([hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
                    for image in records.images])
  subjects = (records.subjects.astype(str) if records.subjects is not None
              else np.zeros(len(records), dtype=str))
  return np.lexsort((subjects, records.labels, key))


def _deal_subjects(records: Records, order: np.ndarray, shares: np.ndarray,
                   seed: int) -> np.ndarray:
  """(N,) bin of every example (indexed like `records`), dealing whole subjects to bins.

  Greedy minimisation of sum_b sum_c n[b,c]² / (share_b · N_c), whose optimum is n[b,c] =
  share_b · N_c: each subject, largest first, goes to the bin where that sum grows least (ties:
  the smaller bin, then the lower index).
  """
  subjects = records.subjects.astype(str)[order]
  labels = records.labels[order]
  names, inverse = np.unique(subjects, return_inverse=True)  # sorted: order-independent
  counts = np.zeros((len(names), records.num_classes))
  np.add.at(counts, (inverse, labels), 1)
  totals = np.maximum(counts.sum(0), 1)
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(len(names))
  dealing = shuffled[np.argsort(-counts[shuffled].sum(1), kind='stable')]
  filled = np.zeros((len(shares), records.num_classes))
  subject_bin = np.zeros(len(names), np.int64)
  for s in dealing:
    growth = ((2 * filled * counts[s] + counts[s] ** 2) / totals).sum(1) / shares
    best = min(range(len(shares)), key=lambda b: (round(growth[b], 9), filled[b].sum(), b))
    subject_bin[s] = best
    filled[best] += counts[s]
  bins = np.empty(len(records), np.int64)
  bins[order] = subject_bin[inverse]
  return bins


def _check_subjects(records: Records, num_bins: int, what: str) -> None:
  num_subjects = len(np.unique(records.subjects.astype(str)))
  if num_subjects < num_bins:
    raise ConfigError(f'{what} needs at least {num_bins} subjects for a subject-wise split; '
                      f'{records.source or "the dataset"} has {num_subjects}.')


def kfold_split(records: Records, num_folds: int, fold: int, seed: int = 0
                ) -> tuple[Records, Records]:
  """(train, test) of fold `fold` of `num_folds`: test is that fold, train the rest.

  Subject-wise when `records.subjects` is set (group k-fold balancing class counts), stratified
  by class otherwise. The folds partition the records; the result depends only on the records'
  content, `num_folds` and `seed`. Both parts list their examples in canonical order.
  """
  if not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
    raise ConfigError(f'num_folds={num_folds}; k-fold cross-validation needs an integer ≥ 2 '
                      '(the paper uses 5).')
  if not isinstance(fold, (int, np.integer)) or not 0 <= fold < num_folds:
    raise ConfigError(f'fold={fold} is out of range; use 0..{num_folds - 1} for '
                      f'num_folds={num_folds}.')
  if len(records) < num_folds:
    raise ConfigError(f'num_folds={num_folds} exceeds the {len(records)} examples.')
  order = canonical_order(records)
  if records.subjects is not None:
    _check_subjects(records, num_folds, f'num_folds={num_folds}')
    bins = _deal_subjects(records, order, np.full(num_folds, 1.0 / num_folds), seed)
  else:
    rng = np.random.default_rng(seed)
    bins = np.empty(len(records), np.int64)
    start = 0  # the next class continues the round-robin where the previous one stopped
    for c in range(records.num_classes):
      members = order[records.labels[order] == c]
      members = members[rng.permutation(len(members))]
      bins[members] = (start + np.arange(len(members))) % num_folds
      start = (start + len(members)) % num_folds
  is_test = bins[order] == fold
  return records.subset(order[~is_test]), records.subset(order[is_test])

