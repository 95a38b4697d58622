"""Tests of the procedural synthetic faces: determinism, layout, crucial patches, learnability."""

import numpy as np
import pytest

from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets, synthetic
from lnl_jax.errors import ConfigError

RAF_ORDER = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')


@pytest.fixture(scope='module')
def faces64():
  """600 faces at 64 px, shared by the learnability tests."""
  return synthetic.generate_with_parts(600, image_size=64, seed=11)


def test_shapes_dtypes_and_class_names():
  records, parts = synthetic.generate_with_parts(9, image_size=64, seed=0)
  assert synthetic.CLASS_NAMES == RAF_ORDER
  assert records.class_names == RAF_ORDER
  assert records.images.shape == (9, 64, 64, 3) and records.images.dtype == np.uint8
  assert records.labels.shape == (9,) and records.labels.dtype == np.int32
  assert records.crucial.shape == (9, 16) and records.crucial.dtype == bool
  assert records.paths is None and records.subjects is None
  assert records.source.startswith('synthetic faces (seed=0')
  assert parts.part_boxes.shape == (9, 3, 4) and parts.occluder_boxes.shape == (9, 4)
  assert np.all(parts.occluder_boxes == -1)  # occlusion_prob=0
  assert records.images.std() > 20  # not blank


@pytest.mark.parametrize('image_size,num_patches', [(32, 4), (224, 16)])
def test_other_image_sizes(image_size, num_patches):
  records = synthetic.generate(2, image_size=image_size, num_patches=num_patches, seed=0)
  assert records.images.shape == (2, image_size, image_size, 3)
  assert records.crucial.shape == (2, num_patches)


def test_deterministic_and_prefix_consistent():
  a = synthetic.generate(15, image_size=64, seed=7, occlusion_prob=0.5)
  b = synthetic.generate(15, image_size=64, seed=7, occlusion_prob=0.5)
  assert a.images.tobytes() == b.images.tobytes()
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(a.crucial, b.crucial)
  first = synthetic.generate(9, image_size=64, seed=7, occlusion_prob=0.5)
  np.testing.assert_array_equal(first.images, a.images[:9])
  np.testing.assert_array_equal(first.labels, a.labels[:9])
  other = synthetic.generate(15, image_size=64, seed=8, occlusion_prob=0.5)
  assert not np.array_equal(other.images, a.images)


def test_class_balance():
  labels = synthetic.generate(70, image_size=32, num_patches=4, seed=3).labels
  np.testing.assert_array_equal(np.bincount(labels, minlength=7), np.full(7, 10))
  assert len(set(labels[:7].tolist())) == 7  # every block of 7 is a permutation
  assert not np.array_equal(labels[:7], labels[7:14])  # ... a different one each time
  free = synthetic.generate(70, image_size=32, num_patches=4, seed=3, class_balance=False).labels
  assert set(free.tolist()) <= set(range(7)) and len(set(free.tolist())) >= 5
  assert not np.array_equal(np.bincount(free, minlength=7), np.full(7, 10))


def test_crucial_patches_of_canonical_face_by_hand():
  # The canonical regions at 144 px (PART_REGIONS × 144), no pose. Patches: 48 px at 0/32/64/96.
  boxes = np.array([[[36, 36, 70.56, 72], [36, 72, 70.56, 108], [93.6, 47.52, 123.84, 96.48]]])
  crucial = synthetic.crucial_patches(boxes, 144, 16, 16)
  # Left eye: patch 1 covers 36×12 of 36×34.56 (35 %), 4 covers 12×34.56 (33 %), 5 all; patches
  # 0 (12 %), 2 and 6 (8 px wide, 8 % / 22 %) miss. Right eye mirrors it: 2, 6, 7. Mouth: 9, 10
  # (40 %), 13, 14 (61 %).
  expected = np.zeros(16, bool)
  expected[[1, 2, 4, 5, 6, 7, 9, 10, 13, 14]] = True
  np.testing.assert_array_equal(crucial[0], expected)


def test_crucial_patch_rules():
  whole = np.array([[[0, 0, 144, 144]]])  # each patch holds 11 % of it, but is 100 % inside it
  assert synthetic.crucial_patches(whole, 144, 16, 16).all()
  tiny = np.array([[[2, 2, 10, 10]]])  # inside patch 0 only
  only_first = np.arange(16) == 0
  np.testing.assert_array_equal(synthetic.crucial_patches(tiny, 144, 16, 16)[0], only_first)
  corner = np.array([[[0, 0, 40, 40]]])  # patch 0 covers all; patches 1, 4 cover 8/40 = 20 %
  np.testing.assert_array_equal(synthetic.crucial_patches(corner, 144, 16, 16)[0], only_first)
  # 'At least' the patch share: columns 36..144 hold exactly 12 of patch 0's 48 columns (25 % of
  # it, 3.7 % of the box), so patch 0 is crucial at min_patch_fraction 0.25, not above it.
  wide = np.array([[[0, 36, 144, 144]]])
  assert synthetic.crucial_patches(wide, 144, 16, 16, min_patch_fraction=0.25)[0, 0]
  assert not synthetic.crucial_patches(wide, 144, 16, 16, min_patch_fraction=0.26)[0, 0]


def test_crucial_at_144_eyes_up_mouth_down():
  records, parts = synthetic.generate_with_parts(40, image_size=144, seed=5)
  counts = records.crucial.sum(axis=1)
  assert np.all(counts >= 1) and np.all(counts < 16)
  rows = np.arange(16) // 4
  for part in range(3):
    per_part = synthetic.crucial_patches(parts.part_boxes[:, [part]], 144, 16, 16)
    assert np.all(per_part.sum(1) >= 1)
    mean_row = (per_part * rows).sum(1) / per_part.sum(1)
    if part < 2:  # eyes and brows: upper half of the 4×4 grid
      assert np.all(mean_row < 1.5), mean_row
    else:  # mouth: lower half
      assert np.all(mean_row > 1.5), mean_row
  # Left eye boxes are left of the right eye's, both above the mouth.
  centre = (parts.part_boxes[..., :2] + parts.part_boxes[..., 2:]) / 2  # (N, 3, (y, x))
  assert np.all(centre[:, 0, 1] < centre[:, 1, 1])
  assert np.all(centre[:, :2, 0].max(1) < centre[:, 2, 0])


def _outside(boxes, image_size, margin=1):
  """Mask of the pixels outside all boxes (grown by margin)."""
  mask = np.ones((image_size, image_size), bool)
  for top, left, bottom, right in boxes:
    mask[max(int(np.floor(top)) - margin, 0):int(np.ceil(bottom)) + margin,
         max(int(np.floor(left)) - margin, 0):int(np.ceil(right)) + margin] = False
  return mask


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_only_the_part_boxes_depend_on_the_class(seed):
  # The same random stream drawn for each class: everything outside the parts must be identical.
  faces = [synthetic._sample_face(label, np.random.default_rng([seed, 99]), occlusion_prob=0.5)
           for label in range(7)]
  boxes = synthetic._part_boxes(faces[6], 64)
  outside = _outside(boxes, 64)
  assert 0.5 < outside.mean() < 0.95
  neutral = synthetic._render(faces[6], 64)
  for face in faces[:6]:
    np.testing.assert_array_equal(synthetic._part_boxes(face, 64), boxes)
    image = synthetic._render(face, 64)
    np.testing.assert_array_equal(image[outside], neutral[outside])
    assert np.abs(image.astype(int) - neutral).max() > 60  # the expression does change the face


def test_occluder_changes_only_its_box():
  plain, _ = synthetic.generate_with_parts(12, image_size=64, seed=4, occlusion_prob=0.0)
  occluded, parts = synthetic.generate_with_parts(12, image_size=64, seed=4, occlusion_prob=1.0)
  np.testing.assert_array_equal(plain.labels, occluded.labels)
  assert np.all(parts.occluder_boxes[:, 2] > parts.occluder_boxes[:, 0])
  for i in range(12):
    outside = _outside(parts.occluder_boxes[i:i + 1], 64)
    np.testing.assert_array_equal(plain.images[i][outside], occluded.images[i][outside])
    assert not np.array_equal(plain.images[i], occluded.images[i])


def test_occluder_boxes_stay_inside_the_image():
  """The occluder's box is clipped to the image like the part boxes (SyntheticParts): a hand near
  the edge (seed 5 draws one whose fingers reach past the left edge) still gets a box in [0, S]."""
  _, parts = synthetic.generate_with_parts(12, image_size=64, seed=5, occlusion_prob=1.0)
  assert parts.occluder_boxes.min() >= 0 and parts.occluder_boxes.max() <= 64
  assert (parts.occluder_boxes[:, 1] == 0).any()  # the clipped hand is still among these draws
  assert parts.part_boxes.min() >= 0 and parts.part_boxes.max() <= 64


def _blank(images, boxes):
  out = images.copy()
  for image, image_boxes in zip(out, boxes):
    for top, left, bottom, right in image_boxes:
      image[int(np.floor(top)):int(np.ceil(bottom)), int(np.floor(left)):int(np.ceil(right))] = 128
  return out


def _features(images, cell=8, bins=9):
  """Per cell×cell block: histogram of oriented gradients (square-rooted) and mean colour."""
  grey = images.astype(np.float32).mean(-1) / 255
  gy, gx = np.zeros_like(grey), np.zeros_like(grey)
  gy[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
  gx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
  orientation = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int), bins - 1)
  n, size, _ = grey.shape
  hist = np.zeros((n, size, size, bins), np.float32)
  np.put_along_axis(hist, orientation[..., None], np.hypot(gx, gy)[..., None], axis=-1)
  c = size // cell
  hog = np.sqrt(hist.reshape(n, c, cell, c, cell, bins).sum((2, 4))).reshape(n, -1)
  colour = images.reshape(n, c, cell, c, cell, 3).mean((2, 4)).reshape(n, -1) / 255
  return np.concatenate([hog, colour], axis=1)


def _ridge_test_accuracy(features, labels, num_train, lam=1.0):
  """Held-out accuracy of a one-vs-all ridge-regression classifier."""
  mean, std = features[:num_train].mean(0), features[:num_train].std(0) + 1e-3
  x = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
  a = x[:num_train]
  w = np.linalg.solve(a.T @ a + lam * num_train * np.eye(a.shape[1]),
                      a.T @ np.eye(7)[labels[:num_train]])
  return np.mean(np.argmax(x[num_train:] @ w, 1) == labels[num_train:])


def test_learnable_from_the_crucial_regions_only(faces64):
  records, parts = faces64
  # 450 train / 150 test; chance is 1/7 ≈ 0.14, with a standard error of 0.03 on 150 images.
  # Measured over seeds: ≈ 0.50–0.56 with the parts, ≈ 0.08–0.19 with them blanked.
  accuracy = _ridge_test_accuracy(_features(records.images), records.labels, 450)
  assert accuracy > 0.35, accuracy
  blanked = _blank(records.images, parts.part_boxes)
  blanked_accuracy = _ridge_test_accuracy(_features(blanked), records.labels, 450)
  assert blanked_accuracy < 0.26, blanked_accuracy


def test_not_trivially_separable(faces64):
  records, _ = faces64
  pixels = records.images.reshape(600, 16, 4, 16, 4, 3).mean((2, 4)).reshape(600, -1)
  accuracy = _ridge_test_accuracy(pixels, records.labels, 450, lam=0.1)
  assert accuracy < 0.8, accuracy  # a linear model on raw pixels


@pytest.mark.parametrize('kwargs', [
    dict(image_size=40), dict(image_size=16, num_patches=1), dict(occlusion_prob=1.5),
    dict(seed=-1), dict(num_patches=15), dict(overlap=-2), dict(num_images=-3)])
def test_bad_arguments_raise_config_error(kwargs):
  args = dict(num_images=2, image_size=64) | kwargs
  with pytest.raises(ConfigError):
    synthetic.generate(**args)


def test_load_or_generate_caches(tmp_path, monkeypatch):
  fresh = synthetic.generate(5, image_size=64, seed=2)
  first = synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
  files = list(tmp_path.glob('*.npz'))
  assert len(files) == 1
  np.testing.assert_array_equal(first.images, fresh.images)

  def no_generation(*args, **kwargs):
    raise AssertionError('regenerated although cached')

  monkeypatch.setattr(synthetic, 'generate_with_parts', no_generation)
  cached, parts = synthetic.load_or_generate(5, image_size=64, seed=2, num_patches=4,
                                             cache_dir=str(tmp_path), with_parts=True)
  np.testing.assert_array_equal(cached.images, fresh.images)
  assert isinstance(cached.images, np.memmap) and not cached.images.flags.writeable  # not copied
  np.testing.assert_array_equal(cached.labels, fresh.labels)
  assert cached.crucial.shape == (5, 4)  # recomputed for the grid asked for
  np.testing.assert_array_equal(
      cached.crucial, synthetic.crucial_patches(parts.part_boxes, 64, 4, 16))
  monkeypatch.undo()

  files[0].write_bytes(b'not an npz')
  again = synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
  np.testing.assert_array_equal(again.images, fresh.images)
  (images_file,) = tmp_path.glob('*.images.npy')
  np.save(images_file, fresh.images[:4])  # fewer images than labels: drawn again
  again = synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
  np.testing.assert_array_equal(again.images, fresh.images)
  assert np.load(images_file).shape == fresh.images.shape  # and kept again
  images_file.unlink()  # the images alone lost: drawn again
  again = synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
  np.testing.assert_array_equal(again.images, fresh.images)
  # An empty images file, then a zip cut short: drawn again.
  for cut_short, size in ((images_file, 0), (files[0], 40)):
    cut_short.write_bytes(cut_short.read_bytes()[:size])
    again = synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.images, fresh.images)
  other = synthetic.load_or_generate(5, image_size=64, seed=3, cache_dir=str(tmp_path))
  assert len(list(tmp_path.glob('*.npz'))) == 2
  assert not np.array_equal(other.images, fresh.images)
  monkeypatch.setattr(synthetic, 'SOURCE_DIGEST', 'edited')  # the generator's source changed
  synthetic.load_or_generate(5, image_size=64, seed=2, cache_dir=str(tmp_path))
  assert len(list(tmp_path.glob('*.npz'))) == 3  # drawn again, not read from the older file


def test_load_or_generate_keys_the_cache_by_occlusion(tmp_path):
  """occlusion_prob changes the pixels, so faces cached without occluders must not be handed out
  for occlusion_prob=1, where every face has one (an occluder box, not the -1s of none)."""
  plain = synthetic.load_or_generate(4, image_size=64, seed=4, cache_dir=str(tmp_path))
  occluded, parts = synthetic.load_or_generate(4, image_size=64, seed=4, occlusion_prob=1.0,
                                               cache_dir=str(tmp_path), with_parts=True)
  assert np.all(parts.occluder_boxes >= 0)
  for a, b in zip(plain.images, occluded.images):
    assert not np.array_equal(a, b)


def test_load_splits_cuts_the_synthetic_faces_into_train_then_test():
  """data.num_train faces for training, the next data.num_test for testing: as many as asked, no
  face on both sides, and the training faces are the first ones drawn (the prefix property)."""
  config = dataset_config('synthetic', 'smoke')
  config.data.update(num_train=5, num_test=3, limit=0)
  grid = dict(num_patches=16, overlap=8)
  train, test = datasets.load_splits(config.data, seed=2, **grid)
  assert (len(train), len(test)) == (5, 3)
  assert not {a.tobytes() for a in train.images} & {b.tobytes() for b in test.images}
  drawn = synthetic.generate(8, image_size=config.data.image_size, seed=2, **grid).images
  np.testing.assert_array_equal(train.images, drawn[:5])
  np.testing.assert_array_equal(test.images, drawn[5:])


def test_load_or_generate_without_a_writable_cache_warns_and_goes_on(tmp_path, caplog):
  not_a_folder = tmp_path / 'file'
  not_a_folder.write_text('x')
  faces = synthetic.load_or_generate(3, image_size=64, seed=0, cache_dir=str(not_a_folder / 'c'))
  np.testing.assert_array_equal(faces.images, synthetic.generate(3, image_size=64, seed=0).images)
  assert 'Could not keep the synthetic faces' in caplog.text
