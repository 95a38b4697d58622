"""lnl_jax.predict and lnl_jax.export, and what else reads a trained workdir (lnl_jax.evaluate, the
attention track), on one `smoke` checkpoint, trained once for the whole module."""
import functools
import inspect
import json
import os
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from absl import flags
from PIL import Image

import fixtures
from lnl_jax import checkpoints, evaluate, export, inference, predict, steps, train
from lnl_jax.attention_track import AttentionTracker
from lnl_jax.config_base import dataset_config
from lnl_jax.data import datasets
from lnl_jax.errors import ConfigError
from lnl_jax.steps import Parallel

NUM_FACES = 6
TOL = 1e-5


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A trained smoke workdir and the first test faces written as PNG files (00.png, 01.png, …)."""
  workdir = str(tmp_path_factory.mktemp('workdir'))
  config = dataset_config('synthetic', 'smoke')
  with pytest.MonkeyPatch.context() as patch:  # one device, as the smoke commands of other tests
    patch.setattr(train, 'Parallel', lambda: Parallel(jax.devices()[:1]))
    train.train_and_evaluate(config, workdir)
  _, test = datasets.load_splits(config.data, config.seed, config.model.num_patches,
                                 config.model.overlap)
  records = test.subset(np.arange(NUM_FACES))
  faces = tmp_path_factory.mktemp('faces')
  for i, image in enumerate(records.images):
    Image.fromarray(image).save(faces / f'{i:02d}.png')
  trained = checkpoints.load_trained(workdir)
  # steps.eval_step itself on the in-memory faces, all in one batch (not predict's own path).
  reference = jax.device_get(jax.jit(functools.partial(steps.eval_step, model=trained.model))(
      trained.params, {'image': records.images}))
  return types.SimpleNamespace(workdir=workdir, config=config, records=records, faces=str(faces),
                               trained=trained, reference=reference, test=test)


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('export') / 'model.jaxexport')
  assert cli_main(export, ['--workdir', run.workdir, '--out', path]) == 0
  return path


def cli_main(module, argv):
  """The exit status of `python -m lnl_jax.<module> *argv`, run in this process."""
  flags.FLAGS.unparse_flags()
  try:
    return module.main(flags.FLAGS([module.__name__, *argv]))
  except SystemExit as e:
    return e.code


def _json_lines(text):
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predictions_match_evaluate(run, capsys):
  # Batches of 4 over 6 files: the second batch is padded.
  assert cli_main(predict, ['--workdir', run.workdir, '--json', '--batch_size', '4', run.faces]) == 0
  rows = _json_lines(capsys.readouterr().out)
  assert [os.path.basename(r['file']) for r in rows] == [f'{i:02d}.png' for i in range(NUM_FACES)]
  names = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
  probs = np.array([[r['probabilities'][n] for n in names] for r in rows])
  np.testing.assert_allclose(probs, run.reference['probs'], atol=TOL)
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
  assert [r['prediction'] for r in rows] == [names[i] for i in run.reference['prediction']]
  for r in rows:
    assert r['probability'] == max(r['probabilities'].values())
    assert [t['label'] for t in r['top3']][0] == r['prediction'] and len(r['top3']) == 3

  # train.evaluate over the same faces (its tf.data pipeline, data-parallel eval step).
  parallel = Parallel()
  result = train.evaluate(jax.device_put(run.trained.params, parallel.replicated), run.records,
                          eval_step=parallel.jit_eval_step(run.trained.model), parallel=parallel,
                          config=run.config)
  np.testing.assert_allclose(np.array([r['w_global'] for r in rows]), result['w_global'], atol=TOL)
  np.testing.assert_allclose(np.array([r['w_local'] for r in rows]), result['w_local'], atol=TOL)
  predicted = np.array([names.index(r['prediction']) for r in rows])
  cm = np.zeros((7, 7), int)
  np.add.at(cm, (run.records.labels, predicted), 1)
  np.testing.assert_array_equal(cm, result['cm'])


def test_table_overlays_and_other_formats(run, capsys, tmp_path):
  nested = tmp_path / 'more' / ('deeper' * 12)  # longer than the table's 60-character column
  nested.mkdir(parents=True)
  Image.fromarray(run.records.images[0]).save(nested / 'face.jpg', quality=95)
  Image.fromarray(run.records.images[1]).convert('L').save(nested / 'grey.tiff')
  (nested / 'notes.txt').write_text('not an image, and not picked up from a folder')
  out = tmp_path / 'overlays'
  argv = ['--workdir', run.workdir, '--overlay', str(out), '--batch_size', '4', run.faces,
          str(tmp_path / 'more')]
  assert cli_main(predict, argv) == 0
  captured = capsys.readouterr()
  lines = captured.out.splitlines()
  assert lines[0].split()[:3] == ['file', 'predicted', 'probability']
  assert len(lines) == 1 + NUM_FACES + 2
  assert 'face.jpg' in captured.out and 'grey.tiff' in captured.out
  # Paths longer than the first column (60 characters at most) keep their last 59 after an ellipsis,
  # so the class column starts where its header does.
  column = lines[0].index('predicted')
  for line in lines[1:]:
    assert line[column - 2:column] == '  ' and line[column] != ' ', line
  truncated = sorted(line[:column - 2] for line in lines[1:] if line.startswith('…'))
  assert truncated == ['…' + str(nested / name)[-59:] for name in ('face.jpg', 'grey.tiff')]
  assert captured.err == ''
  expected = {f'{i:02d}.png' for i in range(NUM_FACES)} | {'face.png', 'grey.png'}
  assert set(os.listdir(out)) == expected
  with Image.open(out / '00.png') as overlay:
    assert overlay.format == 'PNG' and overlay.width > 2 * run.trained.image_size


def test_bad_paths_and_unreadable_images(run, capsys, tmp_path):
  bad = tmp_path / 'broken.png'
  bad.write_text('this is not a PNG')
  missing = str(tmp_path / 'missing.jpg')
  empty = tmp_path / 'empty_folder'
  empty.mkdir()
  good = os.path.join(run.faces, '00.png')
  assert cli_main(predict, ['--workdir', run.workdir, missing, str(bad), str(empty), good]) == 0
  captured = capsys.readouterr()
  errors = captured.err.splitlines()
  assert len(errors) == 3  # one line per problem
  assert any('no such file or folder' in e and missing in e for e in errors)
  assert any('cannot decode image' in e and str(bad) in e for e in errors)
  assert any('no image files in folder' in e and str(empty) in e for e in errors)
  assert len(captured.out.splitlines()) == 2  # header + the one good face

  assert cli_main(predict, ['--workdir', run.workdir, missing, str(bad)]) == 1
  assert 'no image could be predicted' in capsys.readouterr().err
  assert cli_main(predict, ['--workdir', str(tmp_path), good]) == 1
  assert 'config.json does not exist' in capsys.readouterr().err
  assert cli_main(predict, ['--workdir', run.workdir, '--checkpoint', '999', good]) == 1
  assert "--checkpoint='999'" in capsys.readouterr().err


def test_command_line_prints_no_traceback(run, tmp_path):
  missing = str(tmp_path / 'nope.png')
  proc = subprocess.run([sys.executable, '-m', 'lnl_jax.predict', f'--workdir={run.workdir}', missing],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert 'Traceback' not in proc.stderr
  assert f'no such file or folder: {missing}' in proc.stderr


def test_crop_faces(run, capsys):
  assert predict.expand_box((10, 20, 40, 30), 0.25) == (0, 5, 60, 60)
  try:
    predict.FaceCropper()
  except ConfigError:  # OpenCV absent (the default install) or unusable
    assert cli_main(predict, ['--workdir', run.workdir, '--crop_faces', run.faces]) == 1
    assert 'pip install "opencv-python-headless<5"' in capsys.readouterr().err
  else:  # a drawn face may or may not be detected; either way every file gets a prediction
    assert cli_main(predict, ['--workdir', run.workdir, '--crop_faces', '--json', run.faces]) == 0
    assert len(_json_lines(capsys.readouterr().out)) == NUM_FACES


def test_load_face_decodes_the_box_the_cropper_finds(tmp_path):
  """With a face cropper, `load_face` shows it the whole image and decodes the box (top, left,
  height, width) it returns, resized to the image size; with no face found, the whole image and
  a warning. (The real cropper needs OpenCV; this one returns a fixed box.)"""
  pixels = np.zeros((30, 40, 3), np.uint8)
  pixels[5:15, 20:32] = (0, 200, 0)
  path = str(tmp_path / 'face.png')
  Image.fromarray(pixels).save(path)
  seen = []

  class Cropper:
    def __init__(self, box):
      self.found = box

    def box(self, image):
      seen.append(image.shape)
      return self.found
  face = inference.load_face(path, 8, Cropper((5, 20, 10, 12)))
  assert face.shape == (8, 8, 3) and (face == (0, 200, 0)).all()
  assert seen == [(30, 40, 3)]
  warnings = []
  whole = inference.load_face(path, 8, Cropper(None), warnings.append)
  np.testing.assert_array_equal(whole, inference.load_face(path, 8))
  assert warnings == [f'no face found in {path}; using the whole image']


def _fake_opencv(monkeypatch, detections):
  """A stand-in `cv2` module whose Haar cascade returns `detections` (x, y, w, h) for any image:
  the detector itself is OpenCV's, not tested here (nor installed by default)."""
  seen = []

  class Cascade:
    def __init__(self, path):
      self.path = path

    def empty(self):
      return False

    def detectMultiScale(self, grey, **kwargs):  # pylint: disable=invalid-name
      seen.append(grey.shape)
      return np.array(detections, np.int32).reshape(-1, 4)
  cv2 = types.ModuleType('cv2')
  cv2.data = types.SimpleNamespace(haarcascades='/cascades')
  cv2.CascadeClassifier, cv2.COLOR_RGB2GRAY = Cascade, 7
  cv2.cvtColor = lambda image, code: image.mean(-1).astype(np.uint8)
  monkeypatch.setitem(sys.modules, 'cv2', cv2)
  return seen


def test_face_cropper_boxes_the_largest_face_with_a_margin(monkeypatch):
  """OpenCV gives faces as (x, y, w, h); the cropper keeps the largest by area (not the widest,
  50×20, nor the smallest), as (top, left, height, width) grown by 15 % of its longer side on every
  side and made square about its centre: x=60, y=8, w=40, h=46 → side round(46·1.3) = 60 about
  (31, 80), i.e. (1, 50, 60, 60)."""
  seen = _fake_opencv(monkeypatch, [(0, 0, 24, 24), (5, 30, 50, 20), (60, 8, 40, 46)])
  image = np.zeros((90, 120, 3), np.uint8)
  assert predict.FaceCropper().box(image) == (1, 50, 60, 60)
  assert seen == [(90, 120)]  # the detector sees the grey image
  _fake_opencv(monkeypatch, [])
  assert predict.FaceCropper().box(image) is None


def test_face_cropper_without_haar_cascades_names_the_opencv_to_install(monkeypatch):
  """OpenCV ≥ 5 has no Haar cascades (no cv2.data, no CascadeClassifier): a ConfigError with the
  install hint, not an AttributeError."""
  monkeypatch.setitem(sys.modules, 'cv2', types.ModuleType('cv2'))
  with pytest.raises(ConfigError, match='opencv-python-headless<5'):
    predict.FaceCropper()


def test_overlay_writes_each_local_weight_on_its_patch(run, monkeypatch, tmp_path):
  """The overlay writes wˡ of patch i = r·n + c at the centre of that patch (x from its columns,
  y from its rows: at 64 px, M = 16, 8-px overlap the patches are 22 px at 0, 14, 28, 42, so
  centres 10.5, 24.5, 38.5, 52.5 in imshow's pixel-centred axes), and titles the face with its
  predicted class and probability in percent. (The figure is taken where it would be written.)"""
  figures = []
  monkeypatch.setattr(predict.plots, 'save', lambda fig, path: figures.append(fig) or path)
  image = np.zeros((64, 64, 3), np.uint8)
  probs = np.array([0.1, 0.05, 0.05, 0.6, 0.1, 0.05, 0.05])
  p = predict.Prediction('x/face.png', image, probs, np.linspace(0, 1, 16), np.arange(16) / 100)
  predict.write_overlay(p, run.trained.class_names, run.trained.model.geometry.boxes(),
                        str(tmp_path / 'face.png'))
  (ax, _) = figures[0].axes  # the face and the colour bar
  written = {t.get_text(): t.get_position() for t in ax.texts}
  centres = (10.5, 24.5, 38.5, 52.5)
  assert written == {f'{(4 * r + c) / 100:.2f}': (centres[c], centres[r])
                     for r in range(4) for c in range(4)}
  assert ax.get_title().splitlines() == ['happiness (60.0%)', 'face.png']


def test_summary_names_the_checkpoint_that_best_loads(run):
  """The best checkpoint, found here from metrics.jsonl and the checkpoint folders on disk: the
  highest test accuracy, a tie going to the later step (README). summary.json names it and
  --checkpoint=best loads it."""
  with open(os.path.join(run.workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(run.workdir, 'metrics.jsonl')) as f:
    epochs = [json.loads(line) for line in f]
  on_disk = {int(n) for n in os.listdir(os.path.join(run.workdir, 'checkpoints')) if n.isdigit()}
  scored = [r for r in epochs if r['step'] in on_disk]
  assert len(scored) == 2  # both epochs of the smoke run are kept
  top = max(r['test_accuracy'] for r in scored)
  best = max(r['step'] for r in scored if r['test_accuracy'] == top)
  assert summary['best_checkpoint_step'] == best
  assert checkpoints.load_trained(run.workdir, 'best').step == best


def test_class_names_sources(run, tmp_path):
  synthetic = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
  assert run.trained.class_names == synthetic  # from the checkpoint's metadata
  folder = run.config.copy_and_resolve_references()
  folder.data.name = 'folder'
  meta = dict(class_names=['a', 'b'])
  assert checkpoints.load_class_names(str(tmp_path), folder, 2, meta) == ('a', 'b')
  assert checkpoints.load_class_names(str(tmp_path), folder, 2) == ('class_0', 'class_1')
  assert checkpoints.load_class_names(str(tmp_path), run.config, 7) == synthetic
  (tmp_path / 'summary.json').write_text(json.dumps(dict(class_names=['x', 'y'])))
  assert checkpoints.load_class_names(str(tmp_path), folder, 2) == ('x', 'y')
  assert checkpoints.load_class_names(str(tmp_path), folder, 2, meta) == ('a', 'b')
  assert checkpoints.load_class_names(str(tmp_path), folder, 3) == ('class_0', 'class_1', 'class_2')


def test_export_round_trips_at_any_batch_size(run, exported):
  fn, info = export.load_exported(exported)
  assert info['class_names'] == list(run.trained.class_names)
  assert info['image_size'] == 64 and info['input']['shape'] == ['b', 64, 64, 3]
  for b in (1, 3):
    out = jax.device_get(fn(run.records.images[:b]))
    assert out['probs'].shape == (b, 7) and out['w_global'].shape == (b, 16)
    for key in export.OUTPUTS:
      np.testing.assert_allclose(out[key], run.reference[key][:b], atol=TOL)


def test_export_loads_without_the_project(run, exported, tmp_path):
  np.save(tmp_path / 'images.npy', run.records.images[:2])
  script = '\n'.join([
      'import json, sys', 'import numpy as np', 'import jax',
      inspect.getsource(export.load_exported),
      f'fn, info = load_exported({exported!r})',
      f'out = fn(np.load({str(tmp_path / "images.npy")!r}))',
      f'np.save({str(tmp_path / "probs.npy")!r}, np.asarray(out["probs"]))',
      'assert not [m for m in sys.modules if m.startswith("lnl_jax")], "lnl_jax was imported"',
  ])
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120,
                        cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / 'probs.npy'), run.reference['probs'][:2], atol=TOL)


def test_export_check(run, exported, capsys, tmp_path):
  argv = ['--check', '--workdir', run.workdir, '--exported', exported, run.faces]
  assert cli_main(export, argv) == 0
  assert 'OK' in capsys.readouterr().out

  # A tampered copy (the last bias of the head shifted) must be caught.
  copy = str(tmp_path / 'tampered.jaxexport')
  for suffix in ('', '.json'):
    with open(exported + suffix, 'rb') as src, open(copy + suffix, 'wb') as dst:
      dst.write(src.read())
  with np.load(exported + '.params.npz') as f:
    params = dict(f)
  params['JointHead_0/Dense_2/bias'] = params['JointHead_0/Dense_2/bias'] + np.arange(7) / 7
  np.savez(copy + '.params.npz', **params)
  assert cli_main(export, ['--check', '--workdir', run.workdir, '--exported', copy, run.faces]) == 1
  assert 'MISMATCH' in capsys.readouterr().out

  assert cli_main(export, ['--check', '--workdir', run.workdir, '--exported',
                               str(tmp_path / 'absent'), run.faces]) == 1
  assert 'absent.json does not exist' in capsys.readouterr().err


def test_predictor_returns_one_row_per_face_whatever_its_batch_size(run):
  """`inference.Predictor` (what the analyses and the evidence run faces through) pads the
  last batch up to its batch size and returns only the faces' own rows: 5 faces in batches of 4
  give 5 rows, those of eval_step on all the faces in one batch."""
  predictor = inference.Predictor(run.trained.model, run.trained.params, 4, stored=False)
  step, shapes = predictor.eval_step, []

  def recorded(params, batch):
    shapes.append(batch['image'].shape)
    return step(params, batch)
  predictor.eval_step = recorded
  out = predictor(run.records.images[:5])
  assert shapes == [(4, 64, 64, 3)] * 2  # the last batch padded: one program for both
  for key in ('prediction', 'probs', 'w_global', 'w_local'):
    assert len(out[key]) == 5, (key, len(out[key]))
    np.testing.assert_allclose(out[key], run.reference[key][:5], atol=TOL)


def _steps_on_disk(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.isdigit())


def test_export_check_refuses_an_export_of_other_classes(run, exported, capsys, tmp_path):
  """--check compares like with like: an export whose sidecar names the workdir's classes in
  another order would map every probability to the wrong expression, so it is refused (exit
  status 1, a message naming the classes) before any comparison."""
  copy = str(tmp_path / 'reordered.jaxexport')
  for suffix in ('', '.params.npz'):
    shutil.copyfile(exported + suffix, copy + suffix)
  with open(exported + '.json') as f:
    info = json.load(f)
  info['class_names'] = info['class_names'][::-1]
  with open(copy + '.json', 'w') as f:
    json.dump(info, f)
  assert cli_main(export, ['--check', '--workdir', run.workdir, '--exported', copy, run.faces]) == 1
  assert 'classes' in capsys.readouterr().err


def test_export_check_compares_with_the_exported_checkpoint(run, capsys, tmp_path):
  """An export of the first epoch's checkpoint (`--checkpoint=STEP`, not the newest) passes
  --check given without --checkpoint: the check loads the step its sidecar names."""
  first, newest = _steps_on_disk(run.workdir)[0], _steps_on_disk(run.workdir)[-1]
  assert first < newest
  path = str(tmp_path / 'first.jaxexport')
  argv = ['--workdir', run.workdir, '--checkpoint', str(first), '--out', path]
  assert cli_main(export, argv) == 0
  with open(path + '.json') as f:
    assert json.load(f)['checkpoint_step'] == first
  capsys.readouterr()
  assert cli_main(export, ['--check', '--workdir', run.workdir, '--exported', path, run.faces]) == 0
  assert 'OK' in capsys.readouterr().out


def test_overlays_of_faces_with_the_same_file_name_do_not_overwrite_each_other(run, tmp_path):
  """Three folders each holding 00.png give three overlays, 00.png, 00-2.png and 00-3.png (the
  module's rule: a stem met before gets -2, -3, ...), one per face."""
  folders = []
  for name in ('a', 'b', 'c'):
    folder = tmp_path / name
    folder.mkdir()
    Image.fromarray(run.records.images[0]).save(folder / '00.png')
    folders.append(str(folder))
  out = tmp_path / 'overlays'
  assert cli_main(predict, ['--workdir', run.workdir, '--overlay', str(out), *folders]) == 0
  assert sorted(os.listdir(out)) == ['00-2.png', '00-3.png', '00.png']


def test_evaluate_scores_the_requested_checkpoint_on_the_test_split(run, tmp_path, capsys):
  """`lnl_jax.evaluate` of the first epoch's checkpoint (not the newest) writes eval_<step>.json:
  the confusion matrix counts (true class, predicted class) over every test face, rows the true
  classes; accuracy is its trace over the total, each class's accuracy its row's diagonal over the
  row, keyed by the class's name, and the balanced accuracy their mean. The predictions here are
  `steps.eval_step`'s on the in-memory test faces, in one batch, with that checkpoint."""
  workdir = str(tmp_path / 'workdir')
  shutil.copytree(run.workdir, workdir)
  first = _steps_on_disk(workdir)[0]
  evaluate.evaluate_workdir(workdir, str(first))
  with open(os.path.join(workdir, f'eval_{first}.json')) as f:
    out = json.load(f)
  trained = checkpoints.load_trained(workdir, str(first))
  predicted = jax.device_get(jax.jit(functools.partial(steps.eval_step, model=trained.model))(
      trained.params, {'image': run.test.images}))['prediction']
  labels = run.test.labels
  assert (np.bincount(labels, minlength=7) > 0).all()  # every class has test faces
  cm = np.zeros((7, 7), int)
  np.add.at(cm, (labels, predicted), 1)
  names = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
  per_class = {n: 100 * np.mean(predicted[labels == i] == i) for i, n in enumerate(names)}
  assert out['step'] == first
  np.testing.assert_array_equal(out['confusion_matrix'], cm)
  assert out['accuracy'] == pytest.approx(100 * np.mean(predicted == labels))
  assert list(out['per_class_accuracy']) == list(names)
  for name in names:
    assert out['per_class_accuracy'][name] == pytest.approx(per_class[name]), name
  assert out['balanced_accuracy'] == pytest.approx(np.mean(list(per_class.values())))
  # The line printed: both accuracies in percent.
  accuracy, balanced = 100 * np.mean(predicted == labels), np.mean(list(per_class.values()))
  assert capsys.readouterr().out == (f'step {first}: test accuracy {accuracy:.2f}%  '
                                     f'balanced {balanced:.2f}%\n')


def test_evaluate_reads_a_moved_dataset_from_data_root_and_refuses_other_classes(run, tmp_path):
  """`lnl_jax.evaluate --data_root=DIR` reads the test split from DIR when the folder config.json
  names is gone; a dataset whose classes are not the checkpoint's is refused, not scored. Here the
  run's config.json is renamed to RAF-DB, whose classes and order are the synthetic faces' (its
  list file's labels 1..7: surprise, fear, disgust, happiness, sadness, anger, neutral)."""
  workdir = tmp_path / 'workdir'
  shutil.copytree(run.workdir, workdir)
  config = json.loads((workdir / 'config.json').read_text())
  config['data'].update(name='raf', root=str(tmp_path / 'gone'))
  (workdir / 'config.json').write_text(json.dumps(config))
  test_labels = [1, 1, 2, 4, 4, 4, 7]  # 1-based, as in list_patition_label.txt
  moved = tmp_path / 'moved'
  fixtures.write_rafdb(str(moved), [1, 2, 3], test_labels)
  argv = ['--workdir', str(workdir), '--checkpoint', 'latest']
  assert cli_main(evaluate, argv) == 1  # the dataset is not where config.json says
  assert not cli_main(evaluate, [*argv, '--data_root', str(moved)])  # exit status 0
  [written] = [n for n in os.listdir(workdir) if n.startswith('eval_')]
  out = json.loads((workdir / written).read_text())
  # Every test face of the moved dataset is scored once, under its true class (rows).
  per_class = np.bincount(np.array(test_labels) - 1, minlength=7)
  np.testing.assert_array_equal(np.sum(out['confusion_matrix'], axis=1), per_class)
  assert out['bad_images'] == 0
  # A class-folder dataset has other classes (sorted folder names): refused, naming both lists.
  config['data'].update(name='folder')
  (workdir / 'config.json').write_text(json.dumps(config))
  other = fixtures.write_class_folders(str(tmp_path / 'folders' / 'test'), dict(angry=2, happy=1))
  fixtures.write_class_folders(str(tmp_path / 'folders' / 'train'), dict(angry=1, happy=2))
  with pytest.raises(ConfigError, match='has the classes angry, happy, but checkpoint'):
    evaluate.evaluate_workdir(str(workdir), 'latest', data_root=os.path.dirname(other))


def test_class_names_of_an_unfinished_run_come_from_its_checkpoint(run, tmp_path):
  """A run on a real dataset that has not finished has no summary.json, and its config names no
  synthetic data to fall back on: its class names come from the checkpoint's metadata, written
  at train time (here the synthetic faces' own, with config.json's dataset renamed 'folder')."""
  workdir = tmp_path / 'workdir'
  shutil.copytree(run.workdir, workdir)
  (workdir / 'summary.json').unlink()
  config = json.loads((workdir / 'config.json').read_text())
  config['data']['name'] = 'folder'
  (workdir / 'config.json').write_text(json.dumps(config))
  assert checkpoints.load_trained(str(workdir)).class_names == (
      'surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')


def test_attention_track_holds_the_tracked_faces_wg_at_every_tracked_step(run):
  """workdir/attention_track.npz of the smoke run (2 epochs of 6 steps, wᵍ tracked every 2 steps,
  4 faces): steps 2, 4, …, 12, the first 4 test faces, and at steps 6 and 12 (the checkpoints of
  the two epochs) the wᵍ `steps.eval_step` gives those checkpoints on those faces."""
  with np.load(os.path.join(run.workdir, 'attention_track.npz')) as f:
    track = dict(f)
  np.testing.assert_array_equal(track['steps'], [2, 4, 6, 8, 10, 12])
  np.testing.assert_array_equal(track['images'], run.records.images[:4])
  assert track['w_global'].shape == (6, 4, 16)
  eval_step = jax.jit(functools.partial(steps.eval_step, model=run.trained.model))
  for step in _steps_on_disk(run.workdir):
    params = checkpoints.load_trained(run.workdir, str(step)).params
    w_global = jax.device_get(eval_step(params, {'image': run.records.images[:4]}))['w_global']
    np.testing.assert_allclose(track['w_global'][step // 2 - 1], w_global, atol=TOL)


def test_a_resumed_run_tracks_on_from_its_checkpoint(run, tmp_path):
  """A run resumed at step 6 keeps the wᵍ tracked up to and including step 6 (saved before that
  checkpoint) and drops the later ones, which it tracks again."""
  saved = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
  np.savez(tmp_path / 'attention_track.npz', steps=np.array([2, 4, 6, 8]), w_global=saved)
  tracker = AttentionTracker(str(tmp_path), run.test, run.config, None, None, 6)
  assert tracker.steps == [2, 4, 6]
  np.testing.assert_array_equal(np.stack(tracker.weights), saved[:3])
