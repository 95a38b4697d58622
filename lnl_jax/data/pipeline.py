"""tf.data input pipeline: `Records` → batches of uint8 faces, labels and masks, one epoch at a time.

Batches are dicts of numpy arrays, per process (`global_batch // process_count` rows):
  image       (B, S, S, 3) uint8 — normalised on device by `lnl_jax.steps.normalize` (uint8 keeps host→device
              traffic 4× smaller than float32)
  label       (B,) int32;  soft_label (B, C) float32 (the records' label distribution, else one-hot)
  index       (B,) int32 — position in `records`, -1 on padding, so analyses can find the image again
  mask        (B,) bool — False on eval padding and on skipped (undecodable) images: losses and
              metrics must weight examples by it
  crucial     (B, M) bool — only when the records carry it (synthetic faces)

Order and augmentation are pure functions of (seed, epoch): the train order is a numpy permutation
seeded by (seed, epoch), and every random op is stateless, seeded by (seed, epoch, record index), so
an example looks the same whatever the process count or parallelism, and a resumed run sees the same
batches. The per-step global batch is the same set of examples for any process count: step k takes
rows [k·G, (k+1)·G) of the epoch order and process p the p-th slice of them.

Bad image files (zero bytes, not an image, truncated, a face box off the image) are never fed as
faces: with on_bad_image='skip' they come out as zero images with mask False (the batch keeps its
size, so every process runs the same number of steps), are counted in a `BadImageCounter`, and the
first few are logged by name; with 'fail' the iterator raises `DataError` naming the file.

TensorFlow is imported when the first pipeline is built (`host.lazy_tensorflow`), not with this
module: a command compiles its train step meanwhile (`StoredFunction.compile_ahead`).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Iterator

from absl import logging
import jax
import numpy as np

from lnl_jax import host
from lnl_jax.data import decode
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

tf = host.lazy_tensorflow

Batch = dict[str, np.ndarray]
# Random erasing's rectangle (Zhong et al., 2020): area 2–40% of the image, aspect ratio 0.3–3.3.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 1 / 0.3)
PREFETCH_BATCHES = 2  # host batches kept ready ahead of the step


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Train steps in one epoch (global batches, remainder dropped)."""
  return num_examples // batch_size


def eval_steps(num_examples: int, batch_size: int) -> int:
  """Eval steps covering every example once (the last global batch padded)."""
  return math.ceil(num_examples / batch_size)


@dataclasses.dataclass
class BadImageCounter:
  """Counts image files that could not be used; read `count`/`paths` after an epoch to log them."""
  max_warnings: int = 5
  count: int = 0
  paths: list[str] = dataclasses.field(default_factory=list)
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

  def add(self, error: DataError, path: str):
    with self._lock:
      self.count += 1
      self.paths.append(path)
      if self.count <= self.max_warnings:
        logging.warning('Skipping bad image (%d so far): %s', self.count, error)
      elif self.count == self.max_warnings + 1:
        logging.warning('More bad images are skipped without a message; see BadImageCounter.')


def train_batches(records: Records, *, batch_size: int, image_size: int, epoch: int, seed: int,
                  crop_padding: int = 8, flip: bool = True, erase_prob: float = 0.0,
                  on_bad_image: str = 'skip', bad_images: BadImageCounter | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  start_step: int = 0) -> Iterator[Batch]:
  """One shuffled, augmented epoch: `steps_per_epoch(len(records), batch_size)` batches.

  `start_step` skips the epoch's first batches without loading them (resuming mid-epoch); the
  remaining batches are exactly those an uninterrupted epoch would give.

  Augmentation (Sec. IV-A: horizontal flips and random crops): flip with p=0.5 when `flip`;
  reflect-pad by `crop_padding` px and crop back to image_size; with `erase_prob`, a random
  rectangle of uniform noise (random erasing, off by default: the paper does not use it).
  """
  _check_seed(seed=seed, epoch=epoch)
  check_train_settings(image_size=image_size, crop_padding=crop_padding, erase_prob=erase_prob,
                       on_bad_image=on_bad_image)
  steps = steps_per_epoch(len(records), batch_size)
  if steps == 0:
    raise ConfigError(f'batch_size={batch_size} exceeds the {len(records)} training examples of '
                      f'{records.source or "the split"}; lower batch_size')
  order = np.random.default_rng([seed, epoch]).permutation(len(records))[:steps * batch_size]
  order = order[start_step * batch_size:]
  augment = lambda image, index: _augment(
      image, index, seed=seed, epoch=epoch, image_size=image_size, crop_padding=crop_padding,
      flip=flip, erase_prob=erase_prob)
  return _batches(records, order, batch_size=batch_size, image_size=image_size, augment=augment,
                  on_bad_image=on_bad_image, bad_images=bad_images,
                  process_index=process_index, process_count=process_count)


def check_train_settings(*, image_size: int, crop_padding: int, erase_prob: float,
                         on_bad_image: str) -> None:
  """ConfigError for augmentation or bad-image settings that `train_batches` refuses (the training
  loop checks them before it starts compiling)."""
  if not 0 <= crop_padding < image_size:
    raise ConfigError(f'data.crop_padding={crop_padding} must be in '
                      f'[0, data.image_size={image_size})')
  if not 0.0 <= erase_prob <= 1.0:
    raise ConfigError(f'data.erase_prob={erase_prob} must be a probability in [0, 1]')
  _check_on_bad_image(on_bad_image)


def _check_on_bad_image(on_bad_image: str) -> None:
  if on_bad_image not in ('skip', 'fail'):
    raise ConfigError(f"data.on_bad_image={on_bad_image!r} must be 'skip' or 'fail'")


def eval_batches(records: Records, *, batch_size: int, image_size: int, on_bad_image: str = 'skip',
                 bad_images: BadImageCounter | None = None, process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[Batch]:
  """Every example exactly once, in record order, no augmentation; `eval_steps` batches.

  The last global batch is padded to full size with mask False (index -1, zero image).
  """
  order = np.arange(len(records))
  return _batches(records, order, batch_size=batch_size, image_size=image_size, augment=None,
                  on_bad_image=on_bad_image, bad_images=bad_images,
                  process_index=process_index, process_count=process_count)


def measure_throughput(records: Records, batch_size: int, image_size: int, num_batches: int,
                       *, seed: int = 0) -> float:
  """Images per second of the train pipeline on this host, after one warm-up batch."""
  epoch, done, start = 0, -1, None
  while done < num_batches:
    for batch in train_batches(records, batch_size=batch_size, image_size=image_size, epoch=epoch,
                               seed=seed, process_index=0, process_count=1):
      del batch  # only the time to produce it counts
      done += 1
      if done == 0:
        start = time.perf_counter()
      if done == num_batches:
        break
    epoch += 1
  return num_batches * batch_size / (time.perf_counter() - start)


def _check_seed(**values):
  for name, v in values.items():
    if int(v) < 0:
      raise ConfigError(f'{name}={v} must be non-negative (it seeds the data order)')


def _check_records(records: Records):
  name = records.source or 'records'
  if len(records) and not (0 <= records.labels.min() and records.labels.max() < records.num_classes):
    raise DataError(f'{name}: labels must lie in [0, {records.num_classes}), got '
                    f'{records.labels.min()}..{records.labels.max()}')
  if records.images is not None:
    images = records.images
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise DataError(f'{name}: in-memory images must be (N, H, W, 3) uint8, got {images.shape} '
                      f'{images.dtype}')
    if records.boxes is not None and (np.asarray(records.boxes) >= 0).any():
      raise DataError(f'{name}: face boxes are applied to image files only; crop in-memory images '
                      'in the reader')


def _local_rows(order: np.ndarray, batch_size: int, process_index: int | None,
                process_count: int | None) -> np.ndarray:
  """This process's record indices, step-major, -1 padding the last global batch."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if batch_size < 1 or batch_size % process_count:
    raise ConfigError(f'batch_size={batch_size} must be a positive multiple of the process count '
                      f'{process_count}')
  if not 0 <= process_index < process_count:
    raise ConfigError(f'process_index={process_index} not in [0, {process_count})')
  steps = eval_steps(len(order), batch_size)
  padded = np.full(steps * batch_size, -1, np.int64)
  padded[:len(order)] = order
  local = batch_size // process_count
  return padded.reshape(steps, batch_size)[:, process_index * local:(process_index + 1) * local]


def _batches(records: Records, order: np.ndarray, *, batch_size, image_size, augment,
             on_bad_image, bad_images, process_index, process_count) -> Iterator[Batch]:
  _check_on_bad_image(on_bad_image)
  _check_records(records)
  rows = _local_rows(order, batch_size, process_index, process_count)
  bad_images = BadImageCounter() if bad_images is None else bad_images
  failure = []  # the DataError of on_bad_image='fail', re-raised outside TF

  load = _loader(records, image_size, on_bad_image, bad_images, failure)

  def example(index):
    image, ok = load(index)
    if augment is not None:
      image = tf.cond(ok, lambda: augment(image, index), lambda: image)
    return index, image, ok

  ds = tf.data.Dataset.from_tensor_slices(rows.reshape(-1))
  # Traced as written: no control flow here depends on a tensor, and AutoGraph's conversion is a
  # large part of building the first pipeline of a process (docs/benchmarks.md).
  ds = ds.map(tf.autograph.experimental.do_not_convert(example),
              num_parallel_calls=host.usable_cores(), deterministic=True)
  ds = ds.batch(rows.shape[1], drop_remainder=True).prefetch(PREFETCH_BATCHES)
  # Fixed parallelism instead of tf.data's autotuner: with the cores busy in the train step, an
  # autotuned pipeline held the end of an epoch (finishing or dropping its iterator) for seconds
  # (docs/benchmarks.md). One decoding thread per core outruns the CPU's train step; with an
  # accelerator's much faster step this setting has not been measured yet.
  options = tf.data.Options()
  options.autotune.enabled = False
  return _to_batches(ds.with_options(options), records, failure)


def _to_batches(ds: tf.data.Dataset, records: Records, failure: list) -> Iterator[Batch]:
  """Adds the label fields from `records` (numpy gathers) and surfaces DataError from inside TF."""
  iterator = ds.as_numpy_iterator()
  num_classes = records.num_classes
  while True:
    try:
      index, image, ok = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      raise DataError(f'input pipeline failed on {records.source or "records"}: {e.message}') from None
    if failure:  # on_bad_image='fail': the loader recorded the error instead of raising inside TF
      raise failure[0]
    valid = index >= 0
    safe = np.where(valid, index, 0)
    label = np.where(valid, records.labels[safe], 0).astype(np.int32)
    if records.soft_labels is not None:
      soft = np.asarray(records.soft_labels[safe], np.float32) * valid[:, None]
    else:
      soft = np.eye(num_classes, dtype=np.float32)[label] * valid[:, None]
    batch = dict(image=image, label=label, soft_label=soft, index=index.astype(np.int32),
                 mask=valid & ok)
    if records.crucial is not None:
      batch['crucial'] = np.asarray(records.crucial[safe], bool) & valid[:, None]
    yield batch


def _loader(records: Records, image_size: int, on_bad_image: str, bad_images: BadImageCounter,
            failure: list):
  """index (int64 scalar tensor, -1 = padding) → ((S, S, 3) uint8 image, ok bool)."""
  blank = np.zeros((image_size, image_size, 3), np.uint8)

  if records.images is not None:
    images = records.images

    def take(i):
      return images[i] if i >= 0 else np.zeros(images.shape[1:], np.uint8)

    def load(index):
      image = tf.numpy_function(take, [index], tf.uint8, stateful=False)
      image.set_shape(images.shape[1:])
      if images.shape[1:3] != (image_size, image_size):
        # Antialiasing only matters when shrinking, and is slow when enlarging (FER2013's 48 px).
        shrink = max(images.shape[1:3]) > image_size
        image = tf.image.resize(image, (image_size, image_size), 'bilinear', antialias=shrink)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
      return image, index >= 0
    return load

  paths, boxes = records.paths, records.boxes

  def read(i):
    if i < 0:
      return blank, np.bool_(False)
    path = str(paths[i])
    try:
      return decode.load_image(path, None if boxes is None else boxes[i], image_size), np.bool_(True)
    except DataError as e:
      if on_bad_image == 'fail':
        failure.append(e)  # raised by the iterator: an exception here would be logged by TF
      else:
        bad_images.add(e, path)
      return blank, np.bool_(False)

  def load(index):
    image, ok = tf.numpy_function(read, [index], (tf.uint8, tf.bool))
    image.set_shape(blank.shape)
    ok.set_shape(())
    return image, ok
  return load


def _augment(image, index, *, seed, epoch, image_size, crop_padding, flip, erase_prob):
  """Flip, reflect-pad-and-crop, random erasing of one (S, S, 3) uint8 image; stateless.

  Flip and crop are one row gather and one column gather: output pixel (y, x) is source pixel
  (reflect(y + dy − p), reflect(x + dx − p)), mirrored in x when flipped; no padded copy is made.
  """
  key = tf.random.experimental.stateless_fold_in(tf.constant([seed, epoch], tf.int64), index)
  flip_key, crop_key, erase_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
  p, last = crop_padding, image_size - 1
  dy, dx = tf.unstack(tf.random.stateless_uniform([2], crop_key, 0, 2 * p + 1, tf.int32))
  reflect = lambda i: last - tf.abs(last - tf.abs(i))  # numpy/TF 'reflect' padding, for |i| ≤ last
  pos = tf.range(image_size)
  rows, cols = reflect(pos + dy - p), reflect(pos + dx - p)
  if flip:
    cols = tf.where(tf.random.stateless_uniform([], flip_key) < 0.5, last - cols, cols)
  image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
  if erase_prob > 0:
    image = _random_erase(image, erase_key, image_size, erase_prob)
  return image


def _random_erase(image, key, size, prob):
  """With probability `prob`, fills a random rectangle with uniform noise (Zhong et al., 2020)."""
  u = tf.random.stateless_uniform([5], key)
  area = size * size * (ERASE_AREA[0] + u[1] * (ERASE_AREA[1] - ERASE_AREA[0]))
  log_lo, log_hi = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
  aspect = tf.exp(log_lo + u[2] * (log_hi - log_lo))
  h = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1, size)
  w = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1, size)
  top = tf.floor(u[3] * (size - h + 1))
  left = tf.floor(u[4] * (size - w + 1))
  pos = tf.range(size, dtype=tf.float32)
  rows = (pos >= top) & (pos < top + h)
  cols = (pos >= left) & (pos < left + w)
  inside = (rows[:, None] & cols[None, :] & (u[0] < prob))[..., None]
  noise = tf.random.stateless_uniform(
      (size, size, 3), tf.random.experimental.stateless_fold_in(key, 1), 0, 256, tf.int32)
  return tf.where(inside, tf.cast(noise, tf.uint8), image)
