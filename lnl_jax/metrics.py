"""Accuracy figures and the workdir's metric files (metrics.jsonl, summary.json, TensorBoard's
event files)."""
from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from lnl_jax import host, io


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """(C, C) counts, rows = true class (as in the paper's Fig. 8–9)."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, predictions), 1)
  return cm


def accuracies(cm: np.ndarray) -> dict:
  """Overall, per-class and balanced (mean per-class) accuracy of a confusion matrix, in %."""
  per_class = 100.0 * np.diag(cm) / np.maximum(cm.sum(1), 1)
  present = cm.sum(1) > 0
  return dict(accuracy=100.0 * np.trace(cm) / max(cm.sum(), 1), per_class=per_class.tolist(),
              balanced_accuracy=float(per_class[present].mean()) if present.any() else 0.0)


class History:
  """Per-epoch records in `workdir/metrics.jsonl`; a resumed run drops the epochs it redoes."""

  def __init__(self, workdir: str, write: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.write = write
    self.records = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.records = [json.loads(line) for line in f if line.strip()]

  def truncate(self, completed_epochs: int) -> None:
    self.records = [r for r in self.records if r['epoch'] <= completed_epochs]
    self._rewrite()

  def append(self, record: dict) -> None:
    self.records.append(record)
    self._rewrite()

  def _rewrite(self):
    if not self.write:
      return
    io.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in self.records))


class ScalarWriter:
  """Scalars to the log, one line per step (`[step] name=value, ...`), and, given a `logdir`, to
  TensorBoard event files there. Flushed on `flush` and `close`.

  What clu's default writer does, without its import: that pulls in TensorBoard's hparams plugin
  and with it Keras, seconds before the first step of every command (docs/benchmarks.md).
  """

  def __init__(self, logdir: str | None):
    self._events = None
    if logdir is not None:
      self._events = host.import_tensorflow().summary.create_file_writer(logdir)

  def write_scalars(self, step: int, scalars: dict) -> None:
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(scalars.items())))
    if self._events is not None:
      summary = host.import_tensorflow().summary  # imported when the writer was made
      with self._events.as_default():
        for k, v in scalars.items():
          summary.scalar(k, v, step=step)

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof = 1; 0 for a single value) of runs' figures: the
  spread over folds or seeds that the reports give as mean ± std."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(history: list[dict], cm: np.ndarray, class_names, mean_of_last: int, **extra) -> dict:
  """summary.json: the paper's figure (mean test accuracy of the last `mean_of_last` epochs) and more."""
  test = [r['test_accuracy'] for r in history if 'test_accuracy' in r]
  last = test[-mean_of_last:]
  acc = accuracies(cm)
  return dict(
      test_accuracy_last_epoch=test[-1] if test else None,
      test_accuracy_mean_last_epochs=float(np.mean(last)) if last else None,
      mean_over_epochs=len(last),
      test_accuracy_best=max(test) if test else None,
      balanced_accuracy=acc['balanced_accuracy'],
      per_class_accuracy=dict(zip(class_names, acc['per_class'])),
      confusion_matrix=cm.tolist(), class_names=list(class_names), epochs=len(test), **extra)
