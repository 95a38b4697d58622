"""The data protocol of Sec. IV-A, end to end from the configs the README reports results for.

Every test loads `configs/<dataset>.py` as `--config=` would and asks `datasets.load_splits` for the
(train, test) records of a tiny dataset written in the release's on-disk format (tests/fixtures.py).
The expectations are written from the paper and the releases' own files, never from lnl_jax:
- RAF-DB basic: train = the `train_*` lines of list_patition_label.txt, test = the `test_*` lines;
  AffectNet: "the validation set is used as the testing set"; SFEW 2.0: test = Val.
- CK+ and AffectNet: the paper's 7 classes, neutral and the six basic expressions (no contempt).
- CK+ and MMI: the paper's five-fold cross-validation, drawn as the README's open choices say
  (subject-wise where the files name a subject, as CK+'s do; stratified by class otherwise).
No model and no TensorFlow: images of 12..24 px.
"""
from __future__ import annotations

import collections
import os

import numpy as np

import fixtures
from fixtures import load_config_file
from lnl_jax.data import datasets

PAPER_FOLDS = 5  # Sec. IV-A: "5-fold cross-validation" on CK+ and MMI
# CK+'s seven classes in the paper: neutral + the six basic expressions (no contempt).
PAPER_CKPLUS_CLASSES = {'neutral', 'anger', 'disgust', 'fear', 'happy', 'sadness', 'surprise'}
# AffectNet's expression codes 0..6 (its manual: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear,
# 5 Disgust, 6 Anger); 7 Contempt and above are not among the paper's 7 classes.
PAPER_AFFECTNET_CLASSES = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust', 'anger')


def _splits(name, root, **data):
  """`configs/<name>.py`'s (train, test) records of the dataset at `root`, with `data` fields
  set (e.g. the fold)."""
  c = load_config_file(name)
  c.data.update(root=str(root), **data)
  return datasets.load_splits(c.data, c.seed, c.model.num_patches, c.model.overlap)


def _names(records):
  return sorted(os.path.basename(str(p)) for p in records.paths)


def test_raf_trains_on_the_train_lines_and_tests_on_the_test_lines(tmp_path):
  # 5 train and 3 test lines (12,271 and 3,068 in the release).
  fixtures.write_rafdb(str(tmp_path), [1, 2, 3, 4, 5], [6, 7, 1])
  train, test = _splits('raf', tmp_path)
  assert _names(train) == [f'train_{i:05d}_aligned.jpg' for i in range(1, 6)]
  assert _names(test) == [f'test_{i:05d}_aligned.jpg' for i in range(1, 4)]
  # labels 1..7 of the file are Surprise..Neutral: test lines 6, 7, 1 = anger, neutral, surprise
  assert [test.class_names[l] for l in test.labels] == ['anger', 'neutral', 'surprise']


def test_affectnet_tests_on_the_validation_list_with_seven_classes(tmp_path):
  rows = {'training': [('1/a.jpg', 0, 0, 20, 20, 0), ('1/b.jpg', 0, 0, 20, 20, 6),
                       ('1/c.jpg', 0, 0, 20, 20, 7), ('1/d.jpg', 0, 0, 20, 20, 1)],
          'validation': [('2/e.jpg', 0, 0, 20, 20, 3), ('2/f.jpg', 0, 0, 20, 20, 7)]}
  fixtures.write_affectnet_csv(str(tmp_path), rows)
  train, test = _splits('affectnet', tmp_path)
  assert train.class_names == PAPER_AFFECTNET_CLASSES
  assert _names(train) == ['a.jpg', 'b.jpg', 'd.jpg']  # contempt (7) is not one of the 7
  assert _names(test) == ['e.jpg']  # validation.csv is the test set
  assert [test.class_names[l] for l in test.labels] == ['surprise']


def test_affectnet_and_ckplus_keep_contempt_with_eight_classes(tmp_path):
  """`--config.data.num_classes=8` (the README's 8-class option) adds contempt, the eighth
  class, to AffectNet (code 7) and to CK+ (emotion 2): its faces are read, not dropped."""
  rows = {'training': [('1/a.jpg', 0, 0, 20, 20, 0), ('1/c.jpg', 0, 0, 20, 20, 7)],
          'validation': [('2/f.jpg', 0, 0, 20, 20, 7)]}
  fixtures.write_affectnet_csv(str(tmp_path / 'affectnet'), rows)
  train, test = _splits('affectnet', tmp_path / 'affectnet', num_classes=8)
  assert train.class_names == PAPER_AFFECTNET_CLASSES + ('contempt',)
  assert _names(train) == ['a.jpg', 'c.jpg'] and _names(test) == ['f.jpg']
  train, test = _splits('ckplus', _ckplus_root(tmp_path), num_classes=8)
  assert set(train.class_names) == PAPER_CKPLUS_CLASSES | {'contempt'}
  assert len(train) + len(test) == 2 * 11  # every sequence, contempt's 3 included


def test_sfew_tests_on_val(tmp_path):
  fixtures.write_sfew(str(tmp_path), {'Angry': 2, 'Happy': 1}, {'Sad': 1, 'Neutral': 2})
  train, test = _splits('sfew', tmp_path)
  assert all(os.sep + 'Train' + os.sep in str(p) for p in train.paths) and len(train) == 3
  assert all(os.sep + 'Val' + os.sep in str(p) for p in test.paths) and len(test) == 3


def test_a_limit_keeps_every_class_in_turn(tmp_path):
  """`data.limit` (the `smoke` variant's quick runs) on SFEW, whose reader lists the faces class
  by class: the faces kept are dealt from the classes in turn, the first of each class first."""
  fixtures.write_sfew(str(tmp_path), {'Angry': 5, 'Happy': 3, 'Sad': 4},
                      {'Angry': 4, 'Neutral': 1, 'Sad': 4})
  train, test = _splits('sfew', tmp_path, limit=7)
  # train, 7 of 5 + 3 + 4: Angry, Happy, Sad, Angry, Happy, Sad, Angry
  assert _count(train) == {'angry': 3, 'happy': 2, 'sad': 2}
  # test, 7 of 4 + 1 + 4: Angry, Neutral, Sad, Angry, Sad, Angry, Sad
  assert _count(test) == {'angry': 3, 'neutral': 1, 'sad': 3}
  angry = sorted(str(p) for p, l in zip(train.paths, train.labels)
                 if train.class_names[l].lower() == 'angry')
  assert [os.path.basename(p) for p in angry] == ['img_000.png', 'img_001.png', 'img_002.png']


def _count(records):
  return collections.Counter(records.class_names[l].lower() for l in records.labels)


def _ckplus_root(tmp_path):
  # 10 subjects, one labelled sequence each (codes 1..7 in turn: S001 and S008 get contempt = 2),
  # plus one extra contempt sequence of S000.
  sequences = [(f'S{s:03d}', '001', 4, 1 + s % 7) for s in range(10)] + [('S000', '002', 3, 2)]
  return fixtures.write_ckplus(str(tmp_path / 'ck'), sequences)


def test_ckplus_config_reads_the_papers_seven_classes(tmp_path):
  train, test = _splits('ckplus', _ckplus_root(tmp_path))
  assert set(train.class_names) == PAPER_CKPLUS_CLASSES and len(train.class_names) == 7
  # The contempt sequences are dropped entirely: 11 sequences, 3 of them contempt (S001, S008,
  # S000/002) -> 8 left, each giving its neutral first frame and its peak frame (618 = 2 × 309).
  assert len(train) + len(test) == 2 * 8


def test_ckplus_config_is_subject_wise_5_fold_cv(tmp_path):
  root = _ckplus_root(tmp_path)
  assert load_config_file('ckplus').data.num_folds == PAPER_FOLDS
  tested = []
  for fold in range(PAPER_FOLDS):
    train, test = _splits('ckplus', root, fold=fold)
    assert not set(train.subjects) & set(test.subjects)
    tested += list(test.paths)
  assert sorted(tested) == sorted(list(train.paths) + list(test.paths))  # 5 folds cover them all


def test_mmi_config_is_stratified_5_fold_cv(tmp_path):
  assert load_config_file('mmi').data.num_folds == PAPER_FOLDS
  # Class folders name no subject: each fold tests a fifth of every class.
  _, test = _splits('mmi', fixtures.write_class_folders(str(tmp_path / 'mmi'),
                                                        {'happy': 10, 'sad': 10}))
  np.testing.assert_array_equal(np.bincount(test.labels), [2, 2])


def test_mmi_folds_are_subject_wise_with_a_subject_pattern(tmp_path):
  """`data.subject_pattern` takes each face's subject from its file name (`s<k>_<i>.png`: 10
  subjects, 4 faces each, 2 per class): every fold tests whole subjects (2 of the 10), and the 5
  folds test every face once."""
  root = tmp_path / 'mmi'
  for k in range(10):
    for i, label in enumerate(('happy', 'happy', 'sad', 'sad')):
      fixtures.write_image(str(root / label / f's{k}_{i}.png'))
  subjects = lambda records: {os.path.basename(str(p)).split('_')[0] for p in records.paths}
  tested = []
  for fold in range(PAPER_FOLDS):
    train, test = _splits('mmi', root, fold=fold, subject_pattern=r'^(s\d+)_')
    assert not subjects(train) & subjects(test) and len(subjects(test)) == 2, fold
    assert len(train) + len(test) == 40
    tested += [str(p) for p in test.paths]
  assert len(tested) == len(set(tested)) == 40
