"""What several test files share: tiny on-disk datasets in the exact layouts of the public
releases, the commands the end-to-end tests start, and a toy patch grid for the analyses.

Each `write_*` function writes real encoded images (PIL; 8..32 px) and real-format label files
under a directory it is given, and returns what it wrote (the path, or the expected labels) so
tests compare a reader's output with independently known values.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import platform
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# oneDNN's wheels are for Linux x86-64: there its lowering must be available (a dependency), and
# elsewhere the CPU keeps XLA's kernels.
ONEDNN_PLATFORM = sys.platform == 'linux' and platform.machine() == 'x86_64'
# XLA flags of every program the tests compile (conftest.py), except where a test's time is in its
# steps: no LLVM optimisation, and XLA's older CPU emitters instead of its fusion emitters, which
# compile much faster at level 0. The programs compute the same functions; only the code XLA
# generates for them differs.
QUICK_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
# A 14-px image cut into a 3×3 grid of 6-px patches 4 px apart (2 px overlap), for the analyses.
GRID_BOXES = [(y, x, y + 6, x + 6) for y in (0, 4, 8) for x in (0, 4, 8)]


def load_config_file(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg), loaded from the file as `--config=` would."""
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def drawn_params(model, images, seed: int = 0):
  """The parameters training starts from for `images`' shape (`layers.draw_params` on the host, as
  `steps.Parallel.init_state` draws them): no init program to compile."""
  import jax  # here: conftest imports this module before it sets XLA_FLAGS
  from lnl_jax.models.layers import draw_params
  shapes = jax.eval_shape(model.init, jax.random.key(seed), images[:1])['params']
  return draw_params(shapes, model.init_scheme, seed)


def command_env(devices: int = 1, optimised: bool = False) -> dict:
  """The environment of a command a test starts: `devices` CPU devices, XLA's optimisation level 0
  unless `optimised` (conftest.py: QUICK_COMPILE), and the session's compilation cache keeping
  every program, so that the commands of one config, in any test file, compile its programs once."""
  flags = f'--xla_force_host_platform_device_count={devices}'
  return dict(os.environ, XLA_FLAGS=flags if optimised else f'{flags} {QUICK_COMPILE}',
              TF_CPP_MIN_LOG_LEVEL='2', JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def run_module(module: str, *args: str, devices: int = 1, optimised: bool = False, ok: bool = True,
               timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
  """`python -m module args` from the repository root, with `env` added to `command_env`; with
  `ok`, its exit status must be 0."""
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        env=dict(command_env(devices, optimised), **(env or {})),
                        capture_output=True, text=True, timeout=timeout)
  if ok:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


FORMATS = {'.jpg': 'JPEG', '.jpeg': 'JPEG', '.png': 'PNG', '.bmp': 'BMP', '.tif': 'TIFF',
           '.tiff': 'TIFF', '.gif': 'GIF', '.webp': 'WEBP'}


def write_image(path: str | bytes, size: int = 16, grey: bool = False) -> None:
  """A small random image at `path`, encoded by its extension (any case), pixels seeded by name."""
  name = os.fsencode(path)
  rng = np.random.default_rng(zlib.crc32(name))
  shape = (size, size) if grey else (size, size, 3)
  os.makedirs(os.path.dirname(name), exist_ok=True)
  ext = os.path.splitext(os.fsdecode(name))[1].lower()
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(name, format=FORMATS[ext])


def write_text(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return path


def write_rafdb(root: str, train_labels, test_labels, layout: str = 'aligned',
                missing=(), extra_lines: str = '') -> str:
  """RAF-DB basic: EmoLabel/list_patition_label.txt (`train_00001.jpg 5`, labels 1..7) and
  Image/aligned/<stem>_aligned.jpg (or Image/original/<name>); names in `missing` get no image."""
  lines = []
  for split, labels in (('train', train_labels), ('test', test_labels)):
    for i, label in enumerate(labels, 1):
      name = f'{split}_{i:05d}.jpg'
      lines.append(f'{name} {label}\n')
      if name in missing:
        continue
      if layout == 'aligned':
        write_image(os.path.join(root, 'Image', 'aligned', f'{split}_{i:05d}_aligned.jpg'), 12)
      else:
        write_image(os.path.join(root, 'Image', 'original', name), 20)
  write_text(os.path.join(root, 'EmoLabel', 'list_patition_label.txt'),
             ''.join(lines) + extra_lines)
  return root


def fer2013_pixels(n: int, seed: int = 0) -> np.ndarray:
  """(n, 48, 48) uint8 grey faces to write into a fer2013.csv."""
  return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def write_fer2013_csv(path: str, emotions, usages, pixels: np.ndarray | None = None,
                      bad_row: int | None = None) -> np.ndarray:
  """Kaggle's fer2013.csv (emotion,pixels,Usage); row `bad_row` (0-based) gets 2303 pixels.

  Returns the (n, 48, 48) pixels written.
  """
  pixels = fer2013_pixels(len(emotions)) if pixels is None else pixels
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['emotion', 'pixels', 'Usage'])
    for i, (emotion, usage) in enumerate(zip(emotions, usages)):
      values = pixels[i].ravel().tolist()
      if i == bad_row:
        values = values[:-1]
      w.writerow([emotion, ' '.join(map(str, values)), usage])
  return pixels


def write_ferplus(root: str, votes, usages) -> np.ndarray:
  """fer2013new.csv (Usage,Image name, 8 emotion + unknown + NF vote counts) and a row-aligned
  fer2013.csv in `root`; returns the pixels of fer2013.csv."""
  pixels = write_fer2013_csv(os.path.join(root, 'fer2013.csv'), [0] * len(votes), usages)
  with open(os.path.join(root, 'fer2013new.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['Usage', 'Image name', 'neutral', 'happiness', 'surprise', 'sadness', 'anger',
                'disgust', 'fear', 'contempt', 'unknown', 'NF'])
    for i, (row, usage) in enumerate(zip(votes, usages)):
      w.writerow([usage, f'fer{i:07d}.png'] + list(row))
  return pixels


def write_class_folders(root: str, counts: dict, ext: str = '.png', size: int = 10,
                        prefix: str = 'img') -> str:
  """`root/<class>/<prefix>_<i><ext>` with counts[class] images per class (0: an empty folder)."""
  for name, n in counts.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(n):
      write_image(os.path.join(root, name, f'{prefix}_{i:03d}{ext}'), size)
  return root


AFFECTNET_HEADER = ['subDirectory_filePath', 'face_x', 'face_y', 'face_width', 'face_height',
                    'facial_landmarks', 'expression', 'valence', 'arousal']


def write_affectnet_csv(root: str, split_rows: dict, header: bool = True) -> str:
  """Manually_Annotated_file_lists/{training,validation}.csv + Manually_Annotated_Images/.

  split_rows maps the list name ('training'/'validation') to rows
  (subDirectory_filePath, face_x, face_y, face_width, face_height, expression).
  """
  for list_name, rows in split_rows.items():
    path = os.path.join(root, 'Manually_Annotated_file_lists', f'{list_name}.csv')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', newline='') as f:
      w = csv.writer(f)
      if header:
        w.writerow(AFFECTNET_HEADER)
      for sub_path, x, y, width, height, expression in rows:
        landmarks = ';'.join(str(v) for v in range(10))
        w.writerow([sub_path, x, y, width, height, landmarks, expression, '0.25', '-0.5'])
        write_image(os.path.join(root, 'Manually_Annotated_Images', sub_path), 24)
  return root


def write_affectnet_npy(root: str, split_expressions: dict) -> str:
  """The newer release: <train_set|val_set>/images/N.jpg + annotations/N_exp.npy (string '3')."""
  for split_dir, expressions in split_expressions.items():
    for i, expression in enumerate(expressions):
      write_image(os.path.join(root, split_dir, 'images', f'{i}.jpg'), 16)
      os.makedirs(os.path.join(root, split_dir, 'annotations'), exist_ok=True)
      annotations = os.path.join(root, split_dir, 'annotations')
      np.save(os.path.join(annotations, f'{i}_exp.npy'), np.array(str(expression)))
      np.save(os.path.join(annotations, f'{i}_val.npy'), np.array('0.1'))
  return root


def write_sfew(root: str, train_counts: dict, val_counts: dict) -> str:
  """Train/Train_Aligned_Faces/<Class>/*.png and Val/Val_Aligned_Faces/<Class>/*.png."""
  write_class_folders(os.path.join(root, 'Train', 'Train_Aligned_Faces'), train_counts, '.png')
  write_class_folders(os.path.join(root, 'Val', 'Val_Aligned_Faces'), val_counts, '.png')
  return root


def write_ckplus(root: str, sequences, emotion_text: dict | None = None) -> str:
  """CK+: cohn-kanade-images/Sxxx/yyy/Sxxx_yyy_0000000k.png (k = 1..frames) and, for a sequence
  with a code, Emotion/Sxxx/yyy/Sxxx_yyy_<last>_emotion.txt holding '   c.0000000e+00'.

  sequences: (subject, sequence, frames, code or None). emotion_text overrides the file's text
  for (subject, sequence).
  """
  for subject, sequence, frames, code in sequences:
    for k in range(1, frames + 1):
      write_image(os.path.join(root, 'cohn-kanade-images', subject, sequence,
                               f'{subject}_{sequence}_{k:08d}.png'), 16, grey=True)
    emotion_dir = os.path.join(root, 'Emotion', subject, sequence)
    os.makedirs(emotion_dir, exist_ok=True)  # the release has folders without a label file too
    if code is not None:
      text = (emotion_text or {}).get((subject, sequence), f'   {code:.7e}\n')
      write_text(os.path.join(emotion_dir, f'{subject}_{sequence}_{frames:08d}_emotion.txt'), text)
  return root


def write_ckplus48(root: str, files: dict) -> str:
  """CK+48: root/<class>/S010_004_00000017.png; files maps class -> file names."""
  for name, names in files.items():
    for file_name in names:
      write_image(os.path.join(root, name, file_name), 12, grey=True)
  return root


def write_jaffe(root: str, names) -> str:
  """JAFFE: TIFFs named like KA.AN1.39.tiff plus the release's README."""
  for name in names:
    write_image(os.path.join(root, name), 16, grey=True)
  write_text(os.path.join(root, 'README'), 'The Japanese Female Facial Expression Database\n')
  return root
