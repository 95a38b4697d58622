"""The one record type every reader returns: what to load for a split, not the loaded pixels."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Records:
  """N examples of one split.

  Exactly one of `paths` (image files, decoded lazily by the pipeline) or `images` (in-memory
  uint8 pixels, for FER2013's CSV and the synthetic faces) is set.
  """
  class_names: tuple[str, ...]
  labels: np.ndarray  # (N,) int32 in [0, len(class_names))
  paths: np.ndarray | None = None  # (N,) str
  images: np.ndarray | None = None  # (N, H, W, 3) uint8
  boxes: np.ndarray | None = None  # (N, 4) int32 face box (top, left, height, width) to crop, or -1s
  soft_labels: np.ndarray | None = None  # (N, C) float32 label distribution (FERPlus votes)
  subjects: np.ndarray | None = None  # (N,) str subject id, for subject-wise folds
  crucial: np.ndarray | None = None  # (N, M) bool patches holding expression cues (synthetic)
  source: str = ''  # what was read, for the log ("RAF-DB basic, Image/aligned, train")

  def __post_init__(self):
    self.labels = np.asarray(self.labels, np.int32)
    if (self.paths is None) == (self.images is None):
      raise ValueError('Records needs exactly one of paths or images')

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def subset(self, index: np.ndarray | slice) -> 'Records':
    """The records at `index` (an int array, or a slice: then views, not copies), every
    per-example field sliced alike."""
    take = lambda a: None if a is None else a[index]
    return dataclasses.replace(
        self, labels=self.labels[index], paths=take(self.paths), images=take(self.images),
        boxes=take(self.boxes), soft_labels=take(self.soft_labels), subjects=take(self.subjects),
        crucial=take(self.crucial))

  def limited(self, n: int) -> 'Records':
    """At most `n` of the records, taken from the classes in turn (each class's in their order
    here), kept in this order: every class is represented as far as `n` allows, also where a
    reader lists its records class by class, as the class-folder readers do."""
    rank = np.zeros(len(self), np.int64)  # each record's position within its class
    for c in np.unique(self.labels):
      members = self.labels == c
      rank[members] = np.arange(members.sum())
    return self.subset(np.sort(np.lexsort((self.labels, rank))[:n]))
