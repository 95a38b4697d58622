"""Tests of the tf.data input pipeline and PIL image decoding, on tiny files written with PIL."""
import logging
import struct
import types
import zlib

import numpy as np
from PIL import Image, JpegImagePlugin
import pytest

from lnl_jax.data import decode
from lnl_jax.data import pipeline
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError

S = 32  # image_size of every test: small keeps the file fast


def _memory_records(n=20, size=S, num_classes=3, seed=0, **extra):
  rng = np.random.default_rng(seed)
  return Records(class_names=tuple('abcdefg'[:num_classes]),
                 labels=rng.integers(0, num_classes, n),
                 images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                 source='test faces', **extra)


def _all(batches):
  return list(batches)


def _cat(batches, key):
  return np.concatenate([b[key] for b in batches])


@pytest.fixture(scope='module')
def jpeg_dir(tmp_path_factory):
  """Eight real 40×48 JPEGs of random colour blocks."""
  root = tmp_path_factory.mktemp('jpegs')
  rng = np.random.default_rng(1)
  paths = []
  for i in range(8):
    blocks = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
    paths.append(str(root / f'face_{i}.jpg'))
    Image.fromarray(pixels).save(paths[-1], quality=95)
  return paths


def test_step_counts():
  assert pipeline.steps_per_epoch(100, 32) == 3
  assert pipeline.eval_steps(100, 32) == 4
  assert pipeline.eval_steps(96, 32) == 3


def test_train_batch_shapes_and_fields():
  rng = np.random.default_rng(3)
  soft = rng.dirichlet(np.ones(3), 20).astype(np.float32)
  crucial = rng.random((20, 16)) < 0.3
  records = _memory_records(size=40, soft_labels=soft, crucial=crucial)
  batches = _all(pipeline.train_batches(records, batch_size=8, image_size=S, epoch=0, seed=0,
                                        process_index=0, process_count=1))
  assert len(batches) == pipeline.steps_per_epoch(20, 8) == 2
  b = batches[0]
  assert b['image'].shape == (8, S, S, 3) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32 and b['index'].dtype == np.int32
  assert b['soft_label'].shape == (8, 3) and b['soft_label'].dtype == np.float32
  assert b['mask'].dtype == bool and b['mask'].all()
  np.testing.assert_array_equal(b['label'], records.labels[b['index']])
  np.testing.assert_array_equal(b['soft_label'], soft[b['index']])
  np.testing.assert_array_equal(b['crucial'], crucial[b['index']])


def test_eval_one_hot_without_soft_labels():
  records = _memory_records(n=5)
  (b,) = _all(pipeline.eval_batches(records, batch_size=8, image_size=S, process_index=0,
                                    process_count=1))
  expected = np.zeros((8, 3), np.float32)
  expected[np.arange(5), records.labels] = 1
  np.testing.assert_array_equal(b['soft_label'], expected)
  assert 'crucial' not in b


def test_eval_covers_every_example_once_with_padding_mask():
  records = _memory_records(n=21)
  batches = _all(pipeline.eval_batches(records, batch_size=8, image_size=S, process_index=0,
                                       process_count=1))
  assert len(batches) == 3 and all(b['image'].shape[0] == 8 for b in batches)
  index, mask = _cat(batches, 'index'), _cat(batches, 'mask')
  np.testing.assert_array_equal(index[mask], np.arange(21))
  np.testing.assert_array_equal(mask, np.arange(24) < 21)
  np.testing.assert_array_equal(index[~mask], -1)
  # Eval never augments: pixels are the stored ones (already S×S, so not even resized).
  np.testing.assert_array_equal(_cat(batches, 'image')[mask], records.images)


@pytest.mark.parametrize('size', [64, 16])  # shrink and enlarge
def test_eval_resizes_in_memory_images(size):
  """In-memory faces (synthetic, FER2013) are resized as files are, with PIL's bilinear
  (antialiased when shrinking): within 2 grey levels of it."""
  records = _memory_records(n=3, size=size)
  (b,) = _all(pipeline.eval_batches(records, batch_size=4, image_size=S, process_index=0,
                                    process_count=1))
  assert b['image'].shape == (4, S, S, 3)
  for got, image in zip(b['image'][:3], records.images):
    want = np.asarray(Image.fromarray(image).resize((S, S), Image.BILINEAR))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_eval_paths_equal_plain_decode(jpeg_dir):
  records = Records(class_names=('a', 'b'), labels=np.arange(8) % 2, paths=np.array(jpeg_dir))
  batches = _all(pipeline.eval_batches(records, batch_size=8, image_size=S, process_index=0,
                                       process_count=1))
  for path, image in zip(jpeg_dir, batches[0]['image']):
    expected = np.asarray(Image.open(path).convert('RGB').resize((S, S), Image.BILINEAR))
    np.testing.assert_array_equal(image, expected)


def _find_augmentation(out, original, pad):
  """(flipped, dy, dx) such that out = crop of reflect-padded (flipped) original, or None."""
  for flipped in (False, True):
    src = original[:, ::-1] if flipped else original
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
    for dy in range(2 * pad + 1):
      for dx in range(2 * pad + 1):
        if np.array_equal(padded[dy:dy + S, dx:dx + S], out):
          return flipped, dy, dx
  return None


def test_train_flips_and_crops_against_unaugmented_images():
  records = _memory_records(n=32)
  pad = 4
  batches = _all(pipeline.train_batches(records, batch_size=32, image_size=S, epoch=0, seed=5,
                                        crop_padding=pad, process_index=0, process_count=1))
  found = [_find_augmentation(image, records.images[i], pad)
           for image, i in zip(batches[0]['image'], batches[0]['index'])]
  assert None not in found, 'an output is no flip/crop of its source image'
  flips = [f for f, _, _ in found]
  assert 5 < sum(flips) < 27  # p = 0.5 flips
  assert sum((dy, dx) != (pad, pad) for _, dy, dx in found) > 25  # crops shift most images


def test_train_resizes_to_image_size_before_flipping_and_cropping():
  """Training faces are the eval pipeline's resized faces, flipped and cropped: augmentation acts
  on the S×S image, so a crop is a window of the reflect-padded resized face."""
  records = _memory_records(n=8, size=48)
  (resized,) = _all(pipeline.eval_batches(records, batch_size=8, image_size=S, process_index=0,
                                          process_count=1))
  (b,) = _all(pipeline.train_batches(records, batch_size=8, image_size=S, epoch=0, seed=5,
                                     crop_padding=4, process_index=0, process_count=1))
  assert b['image'].shape == (8, S, S, 3)
  for image, i in zip(b['image'], b['index']):
    assert _find_augmentation(image, resized['image'][i], 4) is not None, i


def test_train_without_augmentation_is_identity():
  records = _memory_records(n=8)
  (b,) = _all(pipeline.train_batches(records, batch_size=8, image_size=S, epoch=0, seed=5,
                                     crop_padding=0, flip=False, process_index=0,
                                     process_count=1))
  np.testing.assert_array_equal(b['image'], records.images[b['index']])


def test_random_erasing_fills_one_rectangle():
  records = _memory_records(n=8)
  (b,) = _all(pipeline.train_batches(records, batch_size=8, image_size=S, epoch=0, seed=5,
                                     crop_padding=0, flip=False, erase_prob=1.0,
                                     process_index=0, process_count=1))
  for image, i in zip(b['image'], b['index']):
    changed = (image != records.images[i]).any(-1)
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    assert changed.sum() >= 0.02 * S * S * 0.9
    area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert changed.sum() >= 0.9 * area  # the changed pixels fill their bounding box


def test_same_seed_and_epoch_give_identical_batches():
  records = _memory_records(n=24)
  run = lambda epoch, seed: _all(pipeline.train_batches(
      records, batch_size=8, image_size=S, epoch=epoch, seed=seed, erase_prob=0.5,
      process_index=0, process_count=1))
  first, again = run(3, 7), run(3, 7)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(_cat(first, 'index'), _cat(run(4, 7), 'index'))
  assert not np.array_equal(_cat(first, 'index'), _cat(run(3, 8), 'index'))


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_process_shards_make_up_the_global_batch(mode):
  records = _memory_records(n=21)
  make = dict(train=lambda **kw: pipeline.train_batches(records, epoch=2, seed=3, **kw),
              eval=lambda **kw: pipeline.eval_batches(records, **kw))[mode]
  kw = dict(batch_size=8, image_size=S)
  whole = _all(make(process_index=0, process_count=1, **kw))
  shards = [_all(make(process_index=p, process_count=2, **kw)) for p in (0, 1)]
  assert len(shards[0]) == len(shards[1]) == len(whole)
  for step, batch in enumerate(whole):
    parts = [shard[step] for shard in shards]
    assert parts[0]['image'].shape[0] == 4
    for key in batch:  # same examples, same augmentation, same order
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])


def test_config_errors():
  records = _memory_records(n=10)
  with pytest.raises(ConfigError, match='multiple of the process count'):
    pipeline.eval_batches(records, batch_size=5, image_size=S, process_index=0, process_count=2)
  with pytest.raises(ConfigError, match='batch_size=16 exceeds the 10'):
    pipeline.train_batches(records, batch_size=16, image_size=S, epoch=0, seed=0,
                           process_index=0, process_count=1)
  with pytest.raises(ConfigError, match='on_bad_image'):
    pipeline.eval_batches(records, batch_size=4, image_size=S, on_bad_image='ignore',
                          process_index=0, process_count=1)
  with pytest.raises(ConfigError, match='crop_padding'):
    pipeline.train_batches(records, batch_size=4, image_size=S, epoch=0, seed=0,
                           crop_padding=S, process_index=0, process_count=1)


def test_records_errors_name_the_problem():
  records = _memory_records(n=4)
  records.labels[2] = 3
  with pytest.raises(DataError, match=r'test faces: labels must lie in \[0, 3\)'):
    pipeline.eval_batches(records, batch_size=4, image_size=S, process_index=0, process_count=1)
  records = _memory_records(n=4, boxes=np.array([[0, 0, 5, 5]] * 4))
  with pytest.raises(DataError, match='face boxes are applied to image files only'):
    pipeline.eval_batches(records, batch_size=4, image_size=S, process_index=0, process_count=1)
  records = _memory_records(n=4)
  records.images = records.images.astype(np.float32)
  with pytest.raises(DataError, match=r'\(N, H, W, 3\) uint8'):
    pipeline.eval_batches(records, batch_size=4, image_size=S, process_index=0, process_count=1)


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory, jpeg_dir):
  root = tmp_path_factory.mktemp('bad')
  (root / 'empty.jpg').write_bytes(b'')
  (root / 'notes.jpg').write_text('this is not an image\n')
  data = open(jpeg_dir[0], 'rb').read()
  (root / 'truncated.jpg').write_bytes(data[:len(data) // 2])
  return [str(root / n) for n in ('empty.jpg', 'notes.jpg', 'truncated.jpg')]


def _mixed_records(jpeg_dir, bad_files):
  paths = np.array(jpeg_dir[:3] + bad_files[:1] + jpeg_dir[3:5] + bad_files[1:] + jpeg_dir[5:6])
  return Records(class_names=('a', 'b'), labels=np.zeros(len(paths)), paths=paths, source='mixed')


def test_bad_images_are_skipped_counted_and_logged(jpeg_dir, bad_files, caplog):
  records = _mixed_records(jpeg_dir, bad_files)
  counter = pipeline.BadImageCounter()
  with caplog.at_level(logging.WARNING):
    batches = _all(pipeline.eval_batches(records, batch_size=4, image_size=S, bad_images=counter,
                                         process_index=0, process_count=1))
  index, mask = _cat(batches, 'index'), _cat(batches, 'mask')
  is_bad = np.isin(records.paths, bad_files)
  np.testing.assert_array_equal(index[:len(records)], np.arange(len(records)))
  np.testing.assert_array_equal(mask[:len(records)], ~is_bad)
  assert not mask[len(records):].any()
  assert (_cat(batches, 'image')[:len(records)][is_bad] == 0).all()
  assert counter.count == 3 and sorted(counter.paths) == sorted(bad_files)
  for path in bad_files:
    assert path in caplog.text

  counter = pipeline.BadImageCounter()
  train = _all(pipeline.train_batches(records, batch_size=3, image_size=S, epoch=0, seed=0,
                                      bad_images=counter, process_index=0, process_count=1))
  assert len(train) == 3 and counter.count == 3
  index, mask = _cat(train, 'index'), _cat(train, 'mask')
  np.testing.assert_array_equal(mask, ~is_bad[index])


@pytest.mark.parametrize('bad', [0, 1, 2])
def test_bad_image_fail_raises_data_error_naming_file(jpeg_dir, bad_files, bad):
  records = Records(class_names=('a',), labels=np.zeros(3),
                    paths=np.array(jpeg_dir[:2] + [bad_files[bad]]))
  with pytest.raises(DataError, match=bad_files[bad].split('/')[-1]):
    _all(pipeline.eval_batches(records, batch_size=2, image_size=S, on_bad_image='fail',
                               process_index=0, process_count=1))


def _save(tmp_path, name, image, **kw):
  path = str(tmp_path / name)
  image.save(path, **kw)
  return path


def _format_cases(tmp_path):
  """(path, expected mean RGB of the decoded image, tolerance) for each unusual file format."""
  cases = {}
  cases['cmyk'] = (_save(tmp_path, 'cmyk.jpg', Image.new('CMYK', (20, 30), (0, 255, 255, 0))),
                   (255, 0, 0), 6)
  cases['png16'] = (_save(tmp_path, 'max16.png', Image.fromarray(np.full((9, 7), 65535, np.uint16))),
                    (255, 255, 255), 0)
  cases['png16_mid'] = (_save(tmp_path, 'mid16.png',
                              Image.fromarray(np.full((9, 7), 200 * 257, np.uint16))),
                        (200, 200, 200), 0)
  cases['tiff16_big_endian'] = (_save(tmp_path, 'mid16.tiff',
                                      Image.fromarray(np.full((9, 7), 200 * 257, '>u2'))),
                                (200, 200, 200), 0)
  rgba = np.zeros((10, 10, 4), np.uint8)
  rgba[..., :3] = (200, 100, 50)
  rgba[:, 5:, 3] = 255  # left half transparent → black
  cases['rgba'] = (_save(tmp_path, 'rgba.png', Image.fromarray(rgba, 'RGBA')), (100, 50, 25), 3)
  pal = Image.new('P', (12, 12), 1)
  pal.putpalette([0, 0, 0, 10, 120, 230] + [0] * 762)
  cases['palette'] = (_save(tmp_path, 'palette.png', pal), (10, 120, 230), 0)
  pal = Image.new('P', (12, 12), 1)
  pal.putpalette([250, 250, 250, 10, 120, 230] + [0] * 762)
  pal.paste(0, (0, 0, 6, 12))  # left half: colour 0, the transparent one → black
  cases['palette_transparent'] = (_save(tmp_path, 'palette_t.png', pal, transparency=0),
                                  (5, 60, 115), 0)
  cases['grey_tiff'] = (_save(tmp_path, 'grey.tiff', Image.new('L', (11, 13), 77)), (77, 77, 77), 0)
  # 32-bit float [0, 1] data and 32-bit int 8-bit data, each at its top value (1.0, 255): white.
  cases['float_one'] = (_save(tmp_path, 'one.tiff', Image.fromarray(np.ones((8, 6), np.float32))),
                        (255, 255, 255), 0)
  nan = np.full((8, 6), 0.5, np.float32)
  nan[0, 0] = np.nan  # one missing value (black) must not hide that the data are [0, 1]
  cases['float_nan'] = (_save(tmp_path, 'nan.tiff', Image.fromarray(nan)),
                        np.full(3, 128 * 47 / 48), 2)
  cases['int32_255'] = (_save(tmp_path, 'top.tiff',
                              Image.fromarray(np.full((8, 6), 255, np.int32), 'I')),
                        (255, 255, 255), 0)
  cases['one_pixel'] = (_save(tmp_path, 'dot.png', Image.new('RGB', (1, 1), (10, 20, 30))),
                        (10, 20, 30), 0)
  return cases


def test_unusual_formats_decode_to_rgb(tmp_path):
  """Each format of `_format_cases` decodes to its expected colour (decode.py's docstring: 16-bit
  grey ÷257 whatever its byte order, transparency composited on black, float data taken as [0, 1]
  by their maximum, missing values aside), alone and through the pipeline."""
  cases = _format_cases(tmp_path)
  for name, (path, mean, tol) in cases.items():
    image = decode.load_image(path, None, S)
    assert image.shape == (S, S, 3) and image.dtype == np.uint8, name
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), mean, atol=tol + 0.5, err_msg=name)
  # And through the pipeline (PIL inside tf.numpy_function).
  records = Records(class_names=('a',), labels=np.zeros(len(cases)),
                    paths=np.array([p for p, _, _ in cases.values()]))
  (b,) = _all(pipeline.eval_batches(records, batch_size=len(cases), image_size=S,
                                    on_bad_image='fail', process_index=0, process_count=1))
  means = b['image'].reshape(len(cases), -1, 3).mean(1)
  expected = np.array([m for _, m, _ in cases.values()])
  np.testing.assert_allclose(means, expected, atol=6.5)


def test_boxes_crop_the_face_region(tmp_path):
  green, blue = (0, 200, 0), (0, 0, 220)
  pixels = np.full((64, 80, 3), 90, np.uint8)
  pixels[10:26, 20:36] = green  # the face box (top=10, left=20, height=16, width=16)
  pixels[40:, 50:] = blue  # a box running off the image is clipped to this corner
  path = _save(tmp_path, 'scene.png', Image.fromarray(pixels))
  boxes = np.array([[10, 20, 16, 16], [40, 50, 100, 100], [-1, -1, -1, -1], [70, 0, 10, 10]])
  records = Records(class_names=('a',), labels=np.zeros(4), paths=np.array([path] * 4), boxes=boxes)
  counter = pipeline.BadImageCounter()
  (b,) = _all(pipeline.eval_batches(records, batch_size=4, image_size=S, bad_images=counter,
                                    process_index=0, process_count=1))
  assert (b['image'][0] == green).all()
  assert (b['image'][1] == blue).all()
  np.testing.assert_array_equal(b['image'][2], decode.load_image(path, None, S))
  assert list(b['mask']) == [True, True, True, False] and counter.count == 1  # box off the image


def test_a_box_running_off_the_top_left_is_clipped_not_ignored(tmp_path):
  """A face box (top, left, height, width) may start above or left of the image (`predict`'s
  boxes grown about a face near an edge do): it is clipped to the image. A box 24 tall and 12
  wide from (−8, 30) keeps rows 0..16 and columns 30..42 of the image, the green region."""
  green = (0, 200, 0)
  pixels = np.full((40, 60, 3), 90, np.uint8)
  pixels[:16, 30:42] = green
  path = _save(tmp_path, 'edge.png', Image.fromarray(pixels))
  crop = decode.load_image(path, np.array([-8, 30, 24, 12]))
  assert crop.shape == (16, 12, 3) and (crop == green).all()
  crop = decode.load_image(path, np.array([2, -4, 10, 20]))  # off the left edge: columns 0..16
  np.testing.assert_array_equal(crop, pixels[2:12, :16])


def test_subset_slices_every_per_example_field_alike():
  """`Records.subset` keeps each example's fields together: row i of every field (label, path or
  image, box, soft label, subject, crucial flags) is that of example index[i], for an index
  array and for a slice. Each field here encodes its example's number."""
  n = 5
  ids = np.arange(n)
  fields = dict(boxes=np.repeat(ids[:, None], 4, 1), soft_labels=np.repeat(ids[:, None], 2, 1) / n,
                subjects=np.array([f'S{i}' for i in ids]),
                crucial=((ids[:, None] >> np.arange(3)) & 1).astype(bool))
  by_path = Records(class_names=('a', 'b'), labels=ids % 2,
                    paths=np.array([f'{i}.png' for i in ids]), **fields)
  images = np.broadcast_to(ids[:, None, None, None], (n, 2, 2, 3)).astype(np.uint8)
  by_image = Records(class_names=('a', 'b'), labels=ids % 2, images=images)
  for index in (np.array([3, 0, 4]), slice(1, 4)):
    kept = ids[index]
    sub = by_path.subset(index)
    np.testing.assert_array_equal(sub.labels, kept % 2)
    assert list(sub.paths) == [f'{i}.png' for i in kept]
    for name, values in fields.items():
      np.testing.assert_array_equal(getattr(sub, name), values[kept], err_msg=name)
    np.testing.assert_array_equal(by_image.subset(index).images[:, 0, 0, 0], kept)


def test_box_in_large_jpeg_uses_scaled_decode_coordinates(tmp_path):
  pixels = np.full((800, 960, 3), 40, np.uint8)
  pixels[300:500, 400:600] = (230, 30, 30)
  path = _save(tmp_path, 'big.jpg', Image.fromarray(pixels), quality=95)
  image = decode.load_image(path, np.array([300, 400, 200, 200]), S).astype(int)
  inner = image[2:-2, 2:-2].reshape(-1, 3)
  assert np.abs(inner - (230, 30, 30)).max() <= 12


def test_a_large_jpeg_is_decoded_at_no_less_than_twice_the_size_needed(tmp_path, monkeypatch):
  """The decoder's DCT scaling shrinks a 1600-px JPEG needed at 100 px to 200 px (1/8) and one
  needed at 120 px to 400 px (1/4): never below twice the size needed, from which resizing
  antialiases."""
  decoded = []
  load = JpegImagePlugin.JpegImageFile.load
  def recorded_load(self):
    decoded.append(self.size)
    return load(self)
  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'load', recorded_load)
  path = _save(tmp_path, 'big.jpg', Image.new('RGB', (1600, 1600), (40, 90, 200)))
  assert decode.load_image(path, None, 100).shape == (100, 100, 3)
  assert set(decoded) == {(200, 200)}
  decoded.clear()
  assert decode.load_image(path, None, 120).shape == (120, 120, 3)
  assert set(decoded) == {(400, 400)}  # 1/8 would give 200 < 240


def test_a_box_of_any_shape_is_resized_to_the_square_size(tmp_path):
  """A face box S wide but 10 tall, or touching the image only along its edge, is a face resized
  to S×S, or a bad file: never an image of another shape."""
  path = _save(tmp_path, 'wide.png', Image.new('RGB', (40, 40), (10, 20, 30)))
  np.testing.assert_array_equal(decode.load_image(path, np.array([0, 0, 10, S]), S),
                                np.full((S, S, 3), (10, 20, 30)))
  with pytest.raises(DataError, match='lies outside'):
    decode.load_image(path, np.array([40, 0, 8, 8]), S)  # its top is the image's bottom edge


def _png_without_pixels(width: int, height: int) -> bytes:
  """A grey 8-bit PNG declaring this size, whose image data chunk is empty."""
  chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data +
                              struct.pack('>I', zlib.crc32(kind + data)))
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', b'') +
          chunk(b'IEND', b''))


def test_a_decompression_bomb_is_a_bad_file(tmp_path):
  """A file declaring 30000×30000 pixels (PIL refuses it as a decompression bomb) is a file
  that cannot be decoded, named in a DataError, so the pipeline can skip and count it."""
  path = tmp_path / 'bomb.png'
  path.write_bytes(_png_without_pixels(30000, 30000))
  with pytest.raises(DataError, match='cannot decode image .*bomb.png'):
    decode.load_image(str(path), None, S)


def test_measure_throughput_counts_images_per_second_after_the_warm_up(monkeypatch):
  """On a clock that advances 0.5 s per batch produced, 3 timed batches of 8 (after one warm-up
  batch, over two epochs of 2 batches) are 24 images in 1.5 s: 16 images/s."""
  clock = [0.0]
  real = pipeline.train_batches

  def train_batches(*args, **kw):
    for batch in real(*args, **kw):
      clock[0] += 0.5
      yield batch
  monkeypatch.setattr(pipeline, 'train_batches', train_batches)
  monkeypatch.setattr(pipeline, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0]))
  rate = pipeline.measure_throughput(_memory_records(n=16), 8, S, num_batches=3)
  assert rate == pytest.approx(8 / 0.5)
  assert clock[0] == 4 * 0.5  # the warm-up batch and the three timed ones, no more


# --- the augmentation's distributions --------------------------------------------------------
# The tests above check that each output is some flip, crop or erasure of its source; these check
# how often and how large, against the README's open choices: horizontal flips with probability
# 0.5, a reflect-padded random crop over every window, random erasing of 2–40 % of the area with
# aspect 0.3–3.3 filled with uniform noise, and a new draw every epoch. The references are written
# by hand (NumPy's reflect padding, binomial bounds); every draw is seeded.

def _flips_and_crops(records, pad, epoch, seed=3):
  """{index: (flipped, dy, dx)} of one epoch of `records` in a single batch."""
  (batch,) = pipeline.train_batches(records, batch_size=len(records), image_size=S, epoch=epoch,
                                    seed=seed, crop_padding=pad, process_index=0, process_count=1)
  found = {int(i): _find_augmentation(image, records.images[i], pad)
           for image, i in zip(batch['image'], batch['index'])}
  assert None not in found.values(), 'an output is no flip/crop of its source image'
  return found


def test_flips_have_probability_one_half_and_crops_use_every_window():
  pad = 2
  found = _flips_and_crops(_memory_records(n=400), pad, epoch=0).values()
  # Binomial(400, 0.5): mean 200, sd 10; 4 sd either side.
  assert 160 < sum(f for f, _, _ in found) < 240
  for offsets in ([dy for _, dy, _ in found], [dx for _, _, dx in found]):
    # Each of the 2p + 1 = 5 offsets on each axis has probability 1/5 (~80 of 400), and the crop
    # is unbiased: mean offset p (the unshifted window), the mean's sd ~0.07.
    assert np.bincount(offsets, minlength=2 * pad + 1).min() > 40
    assert abs(np.mean(offsets) - pad) < 0.3
    assert max(offsets) == 2 * pad


def test_each_epoch_draws_new_flips_and_crops():
  records, pad = _memory_records(n=200), 2
  first, second = (_flips_and_crops(records, pad, epoch) for epoch in (0, 1))
  # Independent draws agree with probability 1/2 · 1/5 · 1/5 = 0.02: ~4 of 200.
  assert sum(first[i] == second[i] for i in first) < 30


def test_random_erasing_rectangles_follow_the_readme():
  n = 200
  records = _memory_records(n=n, seed=1)
  (batch,) = pipeline.train_batches(records, batch_size=n, image_size=S, epoch=0, seed=2,
                                    crop_padding=0, flip=False, erase_prob=1.0, process_index=0,
                                    process_count=1)
  areas, aspects, erased = [], [], []
  for image, i in zip(batch['image'], batch['index']):
    changed = (image != records.images[i]).any(-1)
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    areas.append(h * w / S**2)
    aspects.append(h / w)
    erased.append(image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].reshape(-1))
  areas, aspects, erased = np.array(areas), np.array(aspects), np.concatenate(erased)
  # Area 2–40 % of the image, drawn over the whole range; rounding the sides to whole pixels takes
  # the smallest, 2 % of 32² = 20.5 px, to no less than 16 px (2 × 8 at aspect 3.3) = 1.6 %.
  assert areas.min() >= 0.015 and areas.max() <= 0.45
  assert np.mean(areas > 0.2) > 0.25  # uniform on [0.02, 0.4]: ~0.5
  # Aspect log-uniform on [0.3, 3.3]: tall and wide rectangles both occur (~1/3 each beyond 1.5).
  assert np.mean(aspects > 1.5) > 0.15 and np.mean(aspects < 1 / 1.5) > 0.15
  # Filled with uniform noise 0..255: mean 127.5, sd √((256² − 1)/12) ≈ 73.9, both ends reached.
  assert abs(erased.mean() - 127.5) < 5 and abs(erased.std() - 73.9) < 5
  assert erased.min() < 5 and erased.max() > 250


def test_start_step_gives_the_rest_of_the_uninterrupted_epoch():
  """Resuming mid-epoch: `start_step=k` skips the epoch's first k batches, and the batches that
  follow are exactly those of the uninterrupted epoch from step k on (same examples in the same
  order, same augmentation), so a resumed run trains on what an uninterrupted one would."""
  records = _memory_records(n=24)
  kw = dict(batch_size=4, image_size=S, epoch=1, seed=2, process_index=0, process_count=1)
  whole = _all(pipeline.train_batches(records, **kw))
  rest = _all(pipeline.train_batches(records, start_step=2, **kw))
  assert len(whole) == 6 and len(rest) == 4
  for expected, got in zip(whole[2:], rest):
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])


def test_random_erasing_happens_with_its_probability():
  """erase_prob=0.5 erases a rectangle in about half the faces, not in every one: of 200 faces,
  Binomial(200, 0.5) (mean 100, sd ~7) erased, so between 70 and 130."""
  n = 200
  records = _memory_records(n=n, seed=4)
  (batch,) = pipeline.train_batches(records, batch_size=n, image_size=S, epoch=0, seed=1,
                                    crop_padding=0, flip=False, erase_prob=0.5, process_index=0,
                                    process_count=1)
  erased = sum(bool((image != records.images[i]).any())
               for image, i in zip(batch['image'], batch['index']))
  assert 70 < erased < 130, erased


@pytest.mark.parametrize('size', [48, 64])  # FER2013's 48 px enlarged, synthetic faces shrunk
def test_resized_in_memory_images_round_to_the_nearest_grey_level(size):
  """Resizing in-memory faces rounds to the nearest grey level, as PIL does: over 4 faces the mean
  signed difference from PIL's bilinear resize is near 0 (truncating instead would make the
  faces ~0.5 grey levels darker on average)."""
  records = _memory_records(n=4, size=size)
  (b,) = _all(pipeline.eval_batches(records, batch_size=4, image_size=S, process_index=0,
                                    process_count=1))
  want = np.stack([np.asarray(Image.fromarray(image).resize((S, S), Image.BILINEAR))
                   for image in records.images])
  assert abs(np.mean(b['image'].astype(float) - want)) < 0.2
