"""Nothing silently wrong on bad input: one table of bad inputs, each with the clear error or the
counted skip it gets (docs/bad_inputs.md is its human-readable copy, tied to it by a test).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Callable

import jax
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from lnl_jax import train
from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets, pipeline
from lnl_jax.data.records import Records
from lnl_jax.errors import ConfigError, DataError
import fixtures
from fixtures import ROOT
from processes import Main, main_command


# ----------------------------------------------------------------------------- bad input table

@dataclasses.dataclass
class Ctx:
  tmp: object  # pathlib.Path of this case
  caplog: object
  monkeypatch: object
  main_errors: Callable[[str], str]  # name of a MAIN_CASES entry -> its one-line error


def raises(fn) -> tuple[str, str]:
  """('error', message) when `fn` raises ConfigError/DataError; any other exception propagates."""
  try:
    fn()
  except (ConfigError, DataError) as e:
    return 'error', str(e)
  return 'ok', ''


def warned(caplog) -> str:
  return '\n'.join(r.getMessage() for r in caplog.records if r.levelname == 'WARNING')


def data_config(name: str, root, **fields):
  config = dataset_config(name, 'smoke')
  config.data.root = str(root)
  config.data.update(fields)
  return config


def load(name: str, root, **fields):
  config = data_config(name, root, **fields)
  return datasets.load_splits(config.data, config.seed, config.model.num_patches,
                              config.model.overlap)


def start_training(tmp, **overrides):
  """train_and_evaluate on a smoke config with dotted overrides; config errors come before any
  compilation, so a case that wrongly passes is still bounded by max_steps=1."""
  config = dataset_config('synthetic', 'smoke')
  config.train.max_steps = 1
  for dotted, value in overrides.items():
    section, key = dotted.split('.')
    config[section][key] = value
  kind, message = raises(lambda: train.train_and_evaluate(config, str(tmp / 'run')))
  if kind == 'error':  # refused before anything was written: no empty workdir is left behind
    assert not (tmp / 'run').exists(), message
  return kind, message


def training_with(dotted: str, value):
  """The case of a config field set to `value` for training (`start_training`)."""
  return lambda c: start_training(c.tmp, **{dotted: value})


def through_main(run: str):
  """The case of a bad input given to the entry point: its one-line error from `main_errors`."""
  return lambda c: ('error', c.main_errors(run))


IMAGE_SIZE = 32


def through_pipeline(path, box=None) -> tuple[str, object]:
  """One image file through the eval pipeline: ('ok', its S×S×3 pixels), or, if it is skipped
  and counted, ('skipped', the DataError the same file gives with on_bad_image='fail')."""
  records = Records(class_names=('a',), labels=[0], paths=np.array([str(path)]),
                    boxes=None if box is None else np.array([box], np.int32))
  bad = pipeline.BadImageCounter()
  [batch] = list(pipeline.eval_batches(records, batch_size=1, image_size=IMAGE_SIZE, bad_images=bad))
  if batch['mask'][0]:
    assert bad.count == 0
    return 'ok', batch['image'][0]
  assert bad.count == 1 and bad.paths == [str(path)] and not batch['image'].any()
  try:
    list(pipeline.eval_batches(records, batch_size=1, image_size=IMAGE_SIZE, on_bad_image='fail'))
  except DataError as e:
    return 'skipped', str(e)
  pytest.fail('on_bad_image=fail did not raise')


def decoded_as(path, rgb, tol: int = 0, **kw) -> tuple[str, str]:
  kind, image = through_pipeline(path, **kw)
  assert kind == 'ok', image
  np.testing.assert_allclose(image.reshape(-1, 3), np.broadcast_to(rgb, (IMAGE_SIZE ** 2, 3)),
                             atol=tol)
  return 'ok', ''


def jpeg(tmp, name='face.jpg', size=(16, 16), rgb=(200, 100, 50)):
  path = tmp / name
  Image.new('RGB', size, rgb).save(path, quality=95)
  return path


def folders(tmp, train: dict, test: dict, ext='.png'):
  fixtures.write_class_folders(str(tmp / 'd' / 'train'), train, ext)
  fixtures.write_class_folders(str(tmp / 'd' / 'test'), test, ext)
  return tmp / 'd'


# Each case: what a user does wrong -> ('error' | 'skipped' | 'warning' | 'ok', message). 'error' is
# a ConfigError/DataError (or, for the main_* cases, the one-line `error: ...` of
# `python -m lnl_jax.main` with exit status 1 and no traceback); 'skipped' is a counted skip.

def case_empty_root_setting(c):
  return raises(lambda: load('raf', ''))


def case_empty_class_folder(c):
  root = folders(c.tmp, dict(angry=2, happy=0, sad=2), dict(angry=1, happy=0, sad=1))
  train_records, _ = load('folder', root)
  assert train_records.class_names == ('angry', 'sad')
  return 'warning', warned(c.caplog)


def case_root_set_for_synthetic_faces(c):
  load('synthetic', c.tmp / 'my_faces')
  return 'warning', warned(c.caplog)


def case_all_class_folders_empty(c):
  root = folders(c.tmp, dict(angry=0, sad=0), dict(angry=1, sad=1))
  return raises(lambda: load('folder', root))


def case_unknown_class_folder(c):
  fixtures.write_sfew(str(c.tmp / 'sfew'), dict(Angry=1, Happy=1, Bored=1), dict(Angry=1, Happy=1))
  return raises(lambda: load('sfew', c.tmp / 'sfew'))


def case_label_file_wrong_columns(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2], [3], extra_lines='train_00003.jpg 4 extra\n')
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_label_not_an_integer(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2], [3], extra_lines='train_00003.jpg happy\n')
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_root_above_the_dataset(c):
  fixtures.write_rafdb(str(c.tmp / 'RAF-DB' / 'basic'), [1, 2], [3])
  return raises(lambda: load('raf', c.tmp / 'RAF-DB'))


def case_label_names_missing_image(c):
  fixtures.write_rafdb(str(c.tmp / 'raf'), [1, 2, 3], [3], missing=('train_00002.jpg',))
  return raises(lambda: load('raf', c.tmp / 'raf'))


def case_fer2013_row_with_2303_pixels(c):
  fixtures.write_fer2013_csv(str(c.tmp / 'fer' / 'fer2013.csv'), [0, 1, 2, 3],
                             ['Training', 'Training', 'Training', 'PrivateTest'], bad_row=1)
  return raises(lambda: load('fer2013', c.tmp / 'fer'))


def case_truncated_jpeg(c):
  path = jpeg(c.tmp, size=(64, 64))
  path.write_bytes(path.read_bytes()[:300])
  return through_pipeline(path)


def case_zero_byte_file(c):
  path = c.tmp / 'empty.png'
  path.write_bytes(b'')
  return through_pipeline(path)


def case_text_file_named_jpg(c):
  path = c.tmp / 'notes.jpg'
  path.write_text('these are not pixels\n')
  return through_pipeline(path)


def case_face_box_outside_image(c):
  return through_pipeline(jpeg(c.tmp), box=(40, 40, 10, 10))  # top, left, h, w on a 16×16 image


def case_cmyk_jpeg(c):
  path = c.tmp / 'cmyk.jpg'
  Image.new('RGB', (16, 16), (200, 100, 50)).convert('CMYK').save(path, quality=95)
  assert Image.open(path).mode == 'CMYK'
  return decoded_as(path, (200, 100, 50), tol=3)


def case_16bit_png(c):
  path = c.tmp / 'deep.png'
  Image.fromarray(np.full((16, 16), 120 * 257, np.uint16)).save(path)
  assert Image.open(path).mode.startswith('I')
  return decoded_as(path, (120, 120, 120))


def case_rgba_png(c):
  path = c.tmp / 'rgba.png'
  rgba = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 4), np.uint8)
  rgba[:, :16] = (200, 100, 50, 255)  # opaque left half; the right half is transparent
  Image.fromarray(rgba, 'RGBA').save(path)
  kind, image = through_pipeline(path)
  assert kind == 'ok'
  np.testing.assert_array_equal(image[:, :16], np.broadcast_to((200, 100, 50), (IMAGE_SIZE, 16, 3)))
  np.testing.assert_array_equal(image[:, 16:], 0)  # composited on black
  return 'ok', ''


def case_1x1_image(c):
  path = c.tmp / 'dot.png'
  Image.new('RGB', (1, 1), (10, 200, 30)).save(path)
  return decoded_as(path, (10, 200, 30))


def case_huge_jpeg(c):
  path = jpeg(c.tmp, 'huge.jpg', size=(6000, 6000), rgb=(30, 60, 90))
  decoded_sizes = []
  draft = JpegImagePlugin.JpegImageFile.draft

  def spy(self, *args, **kw):
    out = draft(self, *args, **kw)
    decoded_sizes.append(self.size)
    return out
  c.monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', spy)
  result = decoded_as(path, (30, 60, 90), tol=2)
  assert decoded_sizes == [(750, 750)]  # the decoder's 1/8 DCT scaling: never 36 MPixel in memory
  return result


def case_non_utf8_file_name(c):
  root = folders(c.tmp, dict(angry=1, sad=1), dict(angry=1, sad=1))
  odd = os.path.join(os.fsencode(root / 'train' / 'angry'), b'caf\xe9.png')
  fixtures.write_image(odd, 10)
  train_records, _ = load('folder', root)
  assert os.fsdecode(odd) in list(train_records.paths)
  return through_pipeline(os.fsdecode(odd))[0], ''


def case_non_utf8_name_of_a_bad_file(c):
  path = os.path.join(os.fsencode(c.tmp), b'bad\xff.jpg')
  open(path, 'wb').close()
  kind, message = through_pipeline(os.fsdecode(path))
  message.encode('utf-8', 'backslashreplace')  # printable; the name is the OS's (PEP 383)
  return kind, message


def case_same_file_in_train_and_test(c):
  fixtures.write_class_folders(str(c.tmp / 'd' / 'train'), dict(angry=2, sad=2))
  os.symlink(c.tmp / 'd' / 'train', c.tmp / 'd' / 'test')  # "test" is the train folder
  return raises(lambda: load('folder', c.tmp / 'd'))


def case_class_folders_differ_between_splits(c):
  # Folder classes are the sorted folder names of each split: 'sad' would be label 2 in train and
  # 1 in test.
  return raises(lambda: load('folder', folders(c.tmp, dict(angry=2, happy=2, sad=2),
                                               dict(angry=2, sad=2))))


def case_duplicate_file_names_across_splits(c):
  # write_image seeds pixels by path, so the same name in train/ and test/ differs in content:
  # fine, as in exports that number each split's files from 0. A byte-identical copy warns.
  root = folders(c.tmp, dict(angry=2, sad=2), dict(angry=2, sad=2))
  load('folder', root)
  assert 'byte-identical' not in warned(c.caplog)
  copy = root / 'test' / 'sad' / 'img_001.png'
  copy.write_bytes((root / 'train' / 'sad' / 'img_001.png').read_bytes())
  load('folder', root)
  return 'warning', warned(c.caplog)


def case_batch_not_divisible_by_devices(c):
  assert jax.device_count() == 4  # tests/conftest.py
  return start_training(c.tmp, **{'train.batch_size': 18})


def case_ckplus_nine_classes(c):
  return raises(lambda: load('ckplus', c.tmp, num_classes=9))


def case_subject_pattern_elsewhere(c):
  return raises(lambda: load('raf', c.tmp, subject_pattern='^(S\\d+)'))


def case_subject_pattern_not_a_regex(c):
  root = folders(c.tmp, dict(angry=2, sad=2), dict(angry=1, sad=1))
  return raises(lambda: load('folder', root, subject_pattern='(S'))


def case_negative_limit(c):
  return raises(lambda: load('folder', folders(c.tmp, dict(angry=2, sad=2), dict(angry=1, sad=1)),
                             limit=-1))


def case_unknown_dataset(c):
  return raises(lambda: load('rafdb2', c.tmp))


def case_workdir_is_a_file(c):
  (c.tmp / 'file').write_text('x')
  config = dataset_config('synthetic', 'smoke')
  return raises(lambda: train.train_and_evaluate(config, str(c.tmp / 'file' / 'run')))


CASES = {  # name: (case, expected kind, substrings the message must contain)
    'missing root': (through_main('missing_root'), 'error', ['no_such_dataset', 'does not exist']),
    'data.root not set': (case_empty_root_setting, 'error', ['data.root is empty']),
    'empty class folder': (case_empty_class_folder, 'warning',
                           ['skipping the class folder', 'train/happy', 'holds no images']),
    'data.root set for synthetic faces': (case_root_set_for_synthetic_faces, 'warning',
                                          ['my_faces is not read', 'data.name=synthetic']),
    'every class folder empty': (case_all_class_folders_empty, 'error',
                                 ['no images', 'in any class folder']),
    'unknown class folder': (case_unknown_class_folder, 'error',
                             ['unknown class folder(s) Bored', 'Train_Aligned_Faces']),
    'label line with 3 columns': (case_label_file_wrong_columns, 'error',
                                  ['list_patition_label.txt:4: 3 columns, expected 2']),
    'label out of range (main)': (through_main('label_out_of_range'), 'error',
                                  ['list_patition_label.txt:2: label 9 is out of range',
                                   'expected 1..7']),
    'label not an integer': (case_label_not_an_integer, 'error',
                             ["list_patition_label.txt:4: label 'happy' is not an integer"]),
    'data.root one folder above the dataset': (
        case_root_above_the_dataset, 'error',
        ['RAF-DB/EmoLabel/list_patition_label.txt, which does not exist',
         'It is in', 'RAF-DB/basic: set data.root to that folder']),
    'label names a missing image': (case_label_names_missing_image, 'error',
                                    ['names 1 image(s) that do not exist',
                                     'train_00002_aligned.jpg']),
    'FER2013 row of 2303 pixels': (case_fer2013_row_with_2303_pixels, 'error',
                                   ['fer2013.csv:3: 2303 pixel values, expected 2304']),
    'truncated JPEG': (case_truncated_jpeg, 'skipped', ['cannot decode image', 'face.jpg']),
    'zero-byte file': (case_zero_byte_file, 'skipped', ['cannot decode image', 'empty.png']),
    'text file named .jpg': (case_text_file_named_jpg, 'skipped',
                             ['cannot decode image', 'notes.jpg', 'cannot identify']),
    'face box outside the image': (case_face_box_outside_image, 'skipped',
                                   ['face box', 'face.jpg', 'lies outside its 16×16 image']),
    'CMYK JPEG': (case_cmyk_jpeg, 'ok', []),
    '16-bit PNG': (case_16bit_png, 'ok', []),
    'RGBA PNG': (case_rgba_png, 'ok', []),
    '1×1 image': (case_1x1_image, 'ok', []),
    '6000×6000 JPEG': (case_huge_jpeg, 'ok', []),
    'non-UTF-8 file name': (case_non_utf8_file_name, 'ok', []),
    'non-UTF-8 name of a bad file': (case_non_utf8_name_of_a_bad_file, 'skipped',
                                     ['cannot decode image', 'bad']),
    'same file in train and test': (case_same_file_in_train_and_test, 'error',
                                     ['4 test image(s) are also in the train split',
                                      'img_000.png']),
    'class folders differ between splits': (case_class_folders_differ_between_splits, 'error',
                                            ["train and test classes differ: ('angry', 'happy', "
                                             "'sad') vs ('angry', 'sad')"]),
    'duplicate file names across splits': (case_duplicate_file_names_across_splits, 'warning',
                                           ['1 test image(s) are byte-identical',
                                            'test/sad/img_001.png']),
    'M = 15 (main)': (through_main('num_patches_15'), 'error',
                      ['model.num_patches=15 is not n² for a whole n ≥ 1']),
    'α = 1.5': (training_with('model.alpha', 1.5), 'error', ['model.alpha=1.5 is outside [0, 1]']),
    'image smaller than the patch grid': (training_with('data.image_size', 32), 'error',
                                          ['data.image_size=32', 'data.image_size ≥ 64']),
    'image size not a multiple of 16': (training_with('data.image_size', 72), 'error',
                                        ['data.image_size=72 must be a positive multiple of 16']),
    'overlap larger than the patches': (training_with('model.overlap', 64), 'error',
                                        ['model.overlap=64 px is too large']),
    'batch not divisible by 4 devices': (case_batch_not_divisible_by_devices, 'error',
                                         ['train.batch_size=18 is not divisible by the 4 devices']),
    'batch not divisible by 3 devices (main)': (through_main('batch_not_divisible'), 'error',
                                                ['train.batch_size=16 is not divisible by the 3']),
    'batch larger than the dataset': (training_with('train.batch_size', 128), 'error',
                                      ['train.batch_size=128 is larger than the 96 training']),
    'train.on_nonfinite typo': (training_with('train.on_nonfinite', 'ignore'), 'error',
                                ["train.on_nonfinite='ignore' must be 'stop' or 'skip'"]),
    'mean of the last 0 epochs': (training_with('train.mean_of_last', 0), 'error',
                                  ['train.mean_of_last=0 must be a whole number ≥ 1']),
    'log every 0 steps': (training_with('train.log_every_steps', 0), 'error',
                          ['train.log_every_steps=0 must be a whole number ≥ 1']),
    'no synthetic test face': (training_with('data.num_test', 0), 'error',
                               ['data.num_test=0: the synthetic faces need at least 1 test face']),
    'CK+ with 9 classes': (case_ckplus_nine_classes, 'error',
                           ['CK+ data.num_classes=9; use 7 (neutral + 6 basic; 6 on CK+48',
                            'or 8 (+ contempt)']),
    'subject pattern for RAF-DB': (case_subject_pattern_elsewhere, 'error',
                                   ["data.subject_pattern='^(S\\\\d+)' is read for MMI and class "
                                    'folders only']),
    'subject pattern not a regex': (case_subject_pattern_not_a_regex, 'error',
                                    ["the subject pattern '(S' is not a regular expression"]),
    'negative limit': (case_negative_limit, 'error',
                       ['data.limit=-1 must be ≥ 0 (0 keeps every example)']),
    'unknown dataset name': (case_unknown_dataset, 'error', ["data.name='rafdb2' is unknown"]),
    'read-only workdir (main)': (through_main('read_only_workdir'), 'error',
                                 ['is not writable', '/run']),
    'crop padding ≥ the image size (main)': (
        through_main('crop_padding_too_large'), 'error',
        ['data.crop_padding=999 must be in [0, data.image_size=64)']),
    'workdir under a file': (case_workdir_is_a_file, 'error',
                             ['is not writable', 'Not a directory', 'file/run']),
    'config override naming no field (main)': (
        through_main('override_names_no_field'), 'error',
        ["override names no field of the config: 'max_step'", 'Did you mean "max_steps"']),
    'config file missing (main)': (through_main('config_file_missing'), 'error',
                                   ['--config=configs/no_such.py:smoke does not load',
                                    'No such file or directory']),
    'config file that fails (main)': (through_main('config_file_fails'), 'error',
                                      ['broken_config.py does not load', 'broken_config.py:2: '
                                       "NameError: name 'undefined_name' is not defined"]),
    'an argument the command does not take (main)': (through_main('unexpected_argument'), 'error',
                                                     ['Too many command-line arguments']),
    'unknown config variant (main)': (through_main('unknown_config_variant'), 'error',
                                      ["unknown config variant 'smok'", 'known: smoke']),
}


def writable(directory) -> bool:
  probe = os.path.join(directory, f'.probe{os.getpid()}')
  try:
    os.mkdir(probe)
  except OSError:
    return False
  os.rmdir(probe)
  return True


def read_only_directory(tmp) -> str:
  """A directory this process cannot write: a chmod 555 folder, or, for root (who ignores file
  modes), a read-only kernel filesystem such as /sys."""
  folder = tmp / 'read_only'
  folder.mkdir()
  folder.chmod(0o555)
  for candidate in (str(folder), '/sys', '/proc/sys'):
    if os.path.isdir(candidate) and not writable(candidate):
      return candidate
  pytest.fail('found no read-only directory to test with')


@pytest.fixture(scope='module')
def main_errors(tmp_path_factory):
  """The entry point's answers to a few bad inputs, run concurrently (each is mostly imports)."""
  tmp = tmp_path_factory.mktemp('main_errors')
  fixtures.write_rafdb(str(tmp / 'raf'), [1, 9, 3], [2])
  read_only = read_only_directory(tmp)
  (tmp / 'broken_config.py').write_text('def get_config(arg=None):\n  return undefined_name\n')
  runs = {
      'missing_root': dict(args=main_command(tmp / 'w1', '--config.data.root=' +
                                             str(tmp / 'no_such_dataset'),
                                             config='--config=configs/folder.py:smoke')),
      'label_out_of_range': dict(args=main_command(tmp / 'w2', f'--config.data.root={tmp / "raf"}',
                                                   config='--config=configs/raf.py:smoke')),
      'num_patches_15': dict(args=main_command(tmp / 'w3', '--config.model.num_patches=15')),
      'batch_not_divisible': dict(args=main_command(tmp / 'w4'), devices=3),
      'read_only_workdir': dict(args=main_command(os.path.join(read_only, 'run'))),
      'crop_padding_too_large': dict(args=main_command(tmp / 'w5',
                                                       '--config.data.crop_padding=999')),
      'override_names_no_field': dict(args=main_command(tmp / 'w6', '--config.train.max_step=3')),
      'config_file_missing': dict(args=main_command(tmp / 'w7', '--config.data.root=/x',
                                                    config='--config=configs/no_such.py:smoke')),
      'unexpected_argument': dict(args=main_command(tmp / 'w10', 'extra_argument')),
      'config_file_fails': dict(args=main_command(tmp / 'w9',
                                                  config=f'--config={tmp / "broken_config.py"}')),
      'unknown_config_variant': dict(
          args=main_command(tmp / 'w8', config='--config=configs/synthetic.py:smok')),
  }
  procs = {name: Main(tmp / f'{name}.log', *r['args'], devices=r.get('devices', 1))
           for name, r in runs.items()}
  results = {}
  for name, proc in procs.items():
    rc, log = proc.wait(timeout=300)
    results[name] = (rc, log)
  (tmp / 'read_only').chmod(0o755)

  def error_of(name: str) -> str:
    rc, log = results[name]
    assert rc == 1, log[-3000:]
    assert 'Traceback' not in log, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith('error: '), log[-3000:]
    # Found before the train step starts compiling (else the command would wait for it).
    assert 'compiled ahead' not in log, log[-3000:]
    return last
  return error_of


@pytest.mark.parametrize('name', CASES)
def test_bad_input_gets_a_clear_message_or_a_counted_skip(name, tmp_path, caplog, monkeypatch,
                                                          main_errors):
  case, expected_kind, substrings = CASES[name]
  kind, message = case(Ctx(tmp_path, caplog, monkeypatch, main_errors))
  assert kind == expected_kind, message
  for s in substrings:
    assert s in message, f'{s!r} not in {message!r}'
  assert 'Traceback' not in message


def documented_bad_inputs() -> list[str]:
  """The rows of docs/bad_inputs.md's tables of bad inputs (those headed `| Input | ...`)."""
  rows, in_table = [], False
  with open(os.path.join(ROOT, 'docs', 'bad_inputs.md'), encoding='utf-8') as f:
    for line in f:
      line = line.strip()
      if line.startswith('| Input |'):
        in_table = True
      elif not line.startswith('|'):
        in_table = False
      elif in_table and not line.startswith('| ---'):
        rows.append(line)
  return rows


def test_bad_inputs_doc_and_readme_match_the_tested_cases():
  """Every row of docs/bad_inputs.md names the CASES it is tested by ([name] in its first cell), or
  the test function (in tests/) that tests it; every case is in the doc exactly once; the README's
  count is the number of rows."""
  rows = documented_bad_inputs()
  named = [re.findall(r'\[([^\]]+)\]', row.split('|')[1]) for row in rows]
  names = [name for row_names in named for name in row_names]
  assert len(names) == len(set(names)), [n for n in set(names) if names.count(n) > 1]
  assert set(names) - set(CASES) == set(), 'documented but not tested'
  assert set(CASES) - set(names) == set(), 'tested but not documented'
  defined = set()
  for path in glob.glob(os.path.join(ROOT, 'tests', 'test_*.py')):
    with open(path, encoding='utf-8') as f:
      defined.update(re.findall(r'^def (test_\w+)\(', f.read(), re.M))
  for row, row_names in zip(rows, named):
    if not row_names:
      tests = re.findall(r'\btest_\w+', row)
      assert tests and set(tests) <= defined, row
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    count = re.search(r'`docs/bad_inputs\.md` lists (\d+) kinds', f.read())
  assert count and int(count[1]) == len(rows)
  assert len(CASES) >= 20
