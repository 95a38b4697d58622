"""metrics: confusion matrices, accuracies, the per-epoch history and summary.json, and the
writes (`lnl_jax.io`) that keep such files whole."""
import json
import os

import numpy as np
import pytest

from lnl_jax import io, metrics


def test_confusion_and_accuracies():
  cm = metrics.confusion(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 4)
  np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  acc = metrics.accuracies(cm)
  assert acc['accuracy'] == pytest.approx(60.0)
  assert acc['per_class'] == pytest.approx([50.0, 100.0, 0.0, 0.0])
  assert acc['balanced_accuracy'] == pytest.approx(50.0)  # class 3 has no examples: left out


def test_history_persists_truncates_and_can_be_read_only(tmp_path):
  history = metrics.History(str(tmp_path))
  for epoch in (1, 2, 3):
    history.append(dict(epoch=epoch, step=10 * epoch, test_accuracy=float(epoch)))
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(l)['epoch'] for l in lines] == [1, 2, 3]

  resumed = metrics.History(str(tmp_path))  # a run resumed after epoch 2 redoes epoch 3
  resumed.truncate(2)
  assert [r['epoch'] for r in metrics.History(str(tmp_path)).records] == [1, 2]

  reader = metrics.History(str(tmp_path), write=False)
  reader.append(dict(epoch=3, step=30, test_accuracy=3.0))
  assert len(metrics.History(str(tmp_path)).records) == 2
  assert not list(tmp_path.glob('*.tmp'))


def test_summarize_means_the_last_epochs():
  history = [dict(epoch=e, test_accuracy=a) for e, a in enumerate([10.0, 20.0, 40.0, 60.0], 1)]
  cm = np.array([[3, 1], [0, 4]])
  s = metrics.summarize(history, cm, ('a', 'b'), mean_of_last=3, num_params=5)
  assert s['test_accuracy_last_epoch'] == 60.0
  assert s['test_accuracy_mean_last_epochs'] == pytest.approx(40.0)
  assert s['mean_over_epochs'] == 3 and s['epochs'] == 4 and s['test_accuracy_best'] == 60.0
  assert s['per_class_accuracy'] == pytest.approx(dict(a=75.0, b=100.0))
  assert s['balanced_accuracy'] == pytest.approx(87.5)
  assert s['confusion_matrix'] == [[3, 1], [0, 4]] and s['num_params'] == 5
  empty = metrics.summarize([], cm, ('a', 'b'), mean_of_last=3)
  assert empty['test_accuracy_mean_last_epochs'] is None and empty['mean_over_epochs'] == 0


def test_summary_best_is_the_highest_epoch_not_the_last():
  """test_accuracy_best is the highest test accuracy of any epoch. Here the accuracy rises and
  then falls, so the best epoch (2) is neither the first nor the last."""
  history = [dict(epoch=e, test_accuracy=a) for e, a in enumerate([30.0, 70.0, 50.0], 1)]
  s = metrics.summarize(history, np.eye(2, dtype=np.int64), ('a', 'b'), mean_of_last=2)
  assert s['test_accuracy_best'] == 70.0
  assert s['test_accuracy_last_epoch'] == 50.0
  assert s['test_accuracy_mean_last_epochs'] == pytest.approx(60.0)


def test_a_write_that_fails_leaves_the_previous_file_and_nothing_else(tmp_path):
  """A crash mid-write leaves the previous version in place and no temporary file beside it."""
  path = tmp_path / 'summary.json'
  io.write_json(str(path), {'epoch': 1})

  def fails_midway(f):
    f.write(b'{"epo')
    raise OSError('disk full')
  with pytest.raises(OSError, match='disk full'):
    io.write_atomic(str(path), fails_midway)
  assert json.loads(path.read_text()) == {'epoch': 1}
  assert os.listdir(tmp_path) == ['summary.json']


def test_writes_create_their_folders_and_take_a_bare_file_name(tmp_path, monkeypatch):
  """A path in folders that do not exist yet has them created; a bare file name is written in the
  working directory (`export --out=model.jaxexport`, say)."""
  io.write_text(str(tmp_path / 'new' / 'deeper' / 'a.txt'), 'a')
  assert (tmp_path / 'new' / 'deeper' / 'a.txt').read_text() == 'a'
  monkeypatch.chdir(tmp_path)
  io.write_json('b.json', [1])
  assert json.loads((tmp_path / 'b.json').read_text()) == [1]
