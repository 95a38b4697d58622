"""Tests of k-fold and hold-out splits: partition, stratification, subject leakage, determinism."""
import collections

import fixtures
import numpy as np
import pytest

from lnl_jax.data import readers
from lnl_jax.data import splits
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError

CLASS_SIZES = (13, 7, 5, 9, 2, 11, 4)  # 51 examples over 7 classes


def _stratified_records():
  labels = np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES)
  paths = np.array([f'/data/{c}/{i:03d}.png' for i, c in enumerate(labels)])
  return Records(class_names=tuple('abcdefg'), labels=labels, paths=paths, source='stratified')


def _subject_records():
  """14 subjects with 2..8 images each, classes mixed within a subject (like CK+ sequences)."""
  rng = np.random.default_rng(7)
  paths, labels, subjects = [], [], []
  for s in range(14):
    for i in range(2 + s % 7):
      paths.append(f'/data/S{s:03d}_{i:02d}.png')
      labels.append(0 if i % 2 == 0 else int(rng.integers(1, 4)))
      subjects.append(f'S{s:03d}')
  return Records(class_names=('neutral', 'a', 'b', 'c'), labels=labels, paths=np.array(paths),
                 subjects=np.array(subjects), source='subjects')


def _shuffled(records, seed=3):
  return records.subset(np.random.default_rng(seed).permutation(len(records)))


def _folds(records, k, seed=0):
  return [splits.kfold_split(records, k, f, seed) for f in range(k)]


def _check_train_test(records, train, test):
  """train and test are disjoint and together hold every record exactly once."""
  assert sorted(list(train.paths) + list(test.paths)) == sorted(records.paths)
  assert not set(train.paths) & set(test.paths)


def _check_partition(records, folds):
  for train, test in folds:
    _check_train_test(records, train, test)
  tests = [p for _, test in folds for p in test.paths]
  assert sorted(tests) == sorted(records.paths)  # the test folds partition the records


def test_kfold_stratified_partition_and_class_balance():
  records = _stratified_records()
  folds = _folds(records, 5)
  _check_partition(records, folds)
  counts = np.array([np.bincount(test.labels, minlength=7) for _, test in folds])  # (fold, class)
  assert (counts.max(0) - counts.min(0) <= 1).all()
  np.testing.assert_array_equal(counts.sum(0), CLASS_SIZES)
  sizes = counts.sum(1)
  assert sizes.max() - sizes.min() <= 1
  for train, test in folds:  # labels travel with their paths
    for r in (train, test):
      assert all(p.startswith(f'/data/{c}/') for p, c in zip(r.paths, r.labels))


def test_kfold_deterministic_and_order_independent():
  records = _stratified_records()
  first = _folds(records, 5, seed=1)
  again = _folds(records, 5, seed=1)
  shuffled = _folds(_shuffled(records), 5, seed=1)
  for (tr1, te1), (tr2, te2), (tr3, te3) in zip(first, again, shuffled):
    assert list(te1.paths) == list(te2.paths) == list(te3.paths)
    assert list(tr1.paths) == list(tr2.paths) == list(tr3.paths)
    np.testing.assert_array_equal(te1.labels, te3.labels)
  other_seed = _folds(records, 5, seed=2)
  assert any(list(a.paths) != list(b.paths) for (_, a), (_, b) in zip(first, other_seed))


def test_kfold_subject_wise_no_leakage():
  records = _subject_records()
  folds = _folds(records, 5)
  _check_partition(records, folds)
  for train, test in folds:
    assert len(test) > 0
    assert not set(train.subjects) & set(test.subjects)
    # Subjects travel with their paths.
    assert all(p.startswith(f'/data/{s}_') for p, s in zip(test.paths, test.subjects))
  shuffled = _folds(_shuffled(records), 5)
  for (_, a), (_, b) in zip(folds, shuffled):
    assert list(a.paths) == list(b.paths)


def test_kfold_subject_wise_balances_identical_subjects():
  # 10 subjects of identical make-up (one neutral + one 'a' frame): 5 folds get exactly 2 each.
  subjects = np.repeat([f'S{i:02d}' for i in range(10)], 2)
  records = Records(class_names=('neutral', 'a'), labels=np.tile([0, 1], 10),
                    paths=np.array([f'{s}_{k}.png' for s, k in zip(subjects, range(20))]),
                    subjects=subjects)
  for _, test in _folds(records, 5):
    assert len(set(test.subjects)) == 2
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_kfold_subject_wise_keeps_fold_sizes_as_even_as_whole_subjects_allow(seed):
  """Two folds of whole subjects, worked by hand.

  One class, subjects of 2, 1 and 1 images: only {2} | {1, 1} gives folds of 2 and 2. Dealing the
  largest subject first finds it; dealing the smallest first puts the two singles apart, and the
  pair then joins one of them (3 and 1).

  Subjects of 3 × 'b', 2 × 'a' and 1 × 'b', dealt largest first: when the 'a' subject is dealt,
  neither fold has an 'a' yet, so the class balance ties and only the tie rule (the smaller fold
  takes it) decides. It gives {3} | {2, 1}, folds of 3 and 3; without it, {3, 2} | {1}, 5 and 1."""
  def fold_sizes(subject_sizes, labels):
    subjects = np.repeat([f'S{i}' for i in range(len(subject_sizes))], subject_sizes)
    records = Records(class_names=('a', 'b'), labels=np.array(labels),
                      paths=np.array([f'{s}_{k}.png' for k, s in enumerate(subjects)]),
                      subjects=subjects)
    folds = _folds(records, 2, seed)
    _check_partition(records, folds)
    return sorted(len(test) for _, test in folds)

  assert fold_sizes((2, 1, 1), [0, 0, 0, 0]) == [2, 2]
  assert fold_sizes((3, 2, 1), [1, 1, 1, 0, 0, 1]) == [3, 3]


def test_kfold_in_memory_images_order_independent():
  rng = np.random.default_rng(0)
  records = Records(class_names=('x', 'y'), labels=np.arange(12) % 2,
                    images=rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8),
                    soft_labels=rng.random((12, 2)).astype(np.float32))
  _, test = splits.kfold_split(records, 3, 1, seed=5)
  _, test_shuffled = splits.kfold_split(_shuffled(records), 3, 1, seed=5)
  np.testing.assert_array_equal(test.images, test_shuffled.images)
  np.testing.assert_array_equal(test.soft_labels, test_shuffled.soft_labels)
  np.testing.assert_array_equal(np.bincount(test.labels), [2, 2])


@pytest.mark.parametrize('num_folds, fold, message', [
    (5, 5, 'fold=5 is out of range; use 0..4'),
    (5, -1, 'fold=-1 is out of range'),
    (1, 0, 'num_folds=1'),
    (15, 0, 'at least 15 subjects.*has 14'),
])
def test_kfold_config_errors(num_folds, fold, message):
  with pytest.raises(ConfigError, match=message):
    splits.kfold_split(_subject_records(), num_folds, fold, 0)


def test_kfold_on_ckplus_reader_output(tmp_path):
  sequences = [(f'S{s:03d}', f'{q:03d}', 3, 1 + (s + q) % 7) for s in range(6) for q in range(2)]
  root = fixtures.write_ckplus(str(tmp_path), sequences)
  records = readers.read_ckplus(root, include_contempt=True)
  assert len(records) == 24
  folds = _folds(records, 5)
  _check_partition(records, folds)
  per_subject = collections.Counter()
  for train, test in folds:
    assert not set(train.subjects) & set(test.subjects)
    per_subject.update(set(test.subjects))
  assert per_subject == {f'S{s:03d}': 1 for s in range(6)}  # every subject tested exactly once
