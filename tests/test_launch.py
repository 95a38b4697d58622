"""The benchmark launchers whose records the docs cite (docs/*.jsonl), run end to end at the
smallest settings their flags allow: each JSON line's fields, and its figures recomputed from its
parts or from what the test knows of the run. No figure is held to a speed.

Three take too long for the suite or need what is not here: `launch.compile_options` (five
compilations of the gradient step at XLA's full optimisation, half a minute even for the tiny
network), `launch.init_study` (at least 50 steps of batch 32 on 1,400 faces) and `launch.peer_ratio`
(the full model, and a PyTorch peer outside the repository): of these, only mistakes in their
flags that end them before they time anything are run (compile_options' in tests/test_cli.py).
Of `launch.import_time`, one process of a round is.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from fixtures import ROOT, run_module
from launch import import_time

# synthetic:smoke (folder:smoke) with one patch and no attention modules: the network that compiles
# fastest (tests/test_bench.py), trained and benched one or two steps at a time.
TINY = ('--config.model.num_patches=1', '--config.model.attention=none')
OVERRIDES = {'model.num_patches': 1, 'model.attention': 'none'}


def lines(proc, out_path) -> list[dict]:
  """The JSON lines of a launcher's stdout, which must be those it appended to its --out file."""
  printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
  with open(out_path) as f:
    assert [json.loads(line) for line in f] == printed
  return printed


def head_revision() -> str:
  return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, check=True,
                        capture_output=True, text=True).stdout.strip()


def last_error(proc) -> str:
  """The one line a command that refused its flags ends with (status 1, no traceback)."""
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  return proc.stderr.splitlines()[-1]


def test_cv_time_counts_the_steps_each_fold_trained(tmp_path):
  """20 faces in 2 folds: each fold trains on 10, one batch of 8 per epoch, and the smoke config's
  2 epochs end it after 2 steps, before the 100 asked for; the training part of the job is those
  4 steps at the bench's step time."""
  out = tmp_path / 'cv.jsonl'
  proc = run_module('launch.cv_time', '--config=configs/folder.py:smoke', '--faces=20', '--folds=2',
                    '--steps=100', *TINY, '--config.train.batch_size=8', f'--out={out}')
  (r,) = lines(proc, out)
  assert (r['what'], r['config'], r['faces'], r['folds'], r['steps_per_fold'], r['batch']) == (
      'cv_time', 'configs/folder.py:smoke', 20, 2, 100, 8)
  assert r['overrides'] == {**OVERRIDES, 'train.batch_size': 8}
  steps_per_fold = min(100, 2 * ((20 // 2) // 8))
  assert r['fold_steps'] == [steps_per_fold] * 2 and len(r['fold_wall_s']) == 2
  assert r['train_steps_s'] == pytest.approx(2 * steps_per_fold * r['step_s'], abs=0.05)
  # The job ran the folds one after the other, so its wall time holds theirs (each rounded to 0.1).
  assert r['wall_s'] >= sum(r['fold_wall_s']) - 0.1
  assert r['step_s'] > 0 and r['step_compile_s'] > 0 and r['cpu_count'] == os.cpu_count()
  # The fields it sets itself cannot be overridden (a fold count other than --folds would leave it
  # reading folds that were not run): refused before any face is written.
  assert last_error(run_module('launch.cv_time', '--config.data.num_folds=3', ok=False)) == (
      'error: --config.data.num_folds is set by launch.cv_time itself; use --folds.')


def test_loop_efficiency_ratio_is_the_loop_over_the_bench(tmp_path):
  """7 steps of 16 faces an epoch: more than the smoke config's data.limit of 96 faces keeps, which
  the loop's run lifts. The ratio is the mean of the epochs after the first over the mean of the
  two benches."""
  out = tmp_path / 'loop.jsonl'
  proc = run_module('launch.loop_efficiency', '--config=configs/synthetic.py:smoke',
                    '--steps_per_epoch=7', '--epochs=2', '--bench_steps=1', *TINY, f'--out={out}')
  (r,) = lines(proc, out)
  assert (r['what'], r['config'], r['batch'], r['steps_per_epoch']) == (
      'loop_efficiency', 'configs/synthetic.py:smoke', 16, 7)
  assert r['overrides'] == OVERRIDES and r['cpu_count'] == os.cpu_count()
  assert len(r['bench_img_per_s']) == 2 and len(r['loop_img_per_s']) == 2
  assert min(r['bench_img_per_s'] + r['loop_img_per_s']) > 0
  # The parts are rounded to 0.01 img/s; the ratio, from the unrounded ones, to 0.001.
  assert r['ratio'] == pytest.approx(r['loop_img_per_s'][1] / np.mean(r['bench_img_per_s']),
                                     abs=1.5e-3)


def test_first_step_times_a_cold_then_a_warm_start(tmp_path):
  """Two runs sharing one compilation cache and one data cache: the first compiles and draws its
  faces, the second finds both. Each reaches step 1's log line (its `seconds` is not null)."""
  out = tmp_path / 'first.jsonl'
  proc = run_module('launch.first_step', '--config=configs/synthetic.py:smoke', '--runs=2', *TINY,
                    f'--out={out}')
  records = lines(proc, out)
  assert [(r['cache'], r['faces']) for r in records] == [('cold', 'drawn'), ('warm', 'kept')]
  revision = head_revision()
  for r in records:
    assert 'log_tail' not in r and r['seconds'] > 0, r
    assert (r['what'], r['config'], r['revision'], r['overrides']) == (
        'first_step', 'configs/synthetic.py:smoke', revision, OVERRIDES)
    assert r['cpu'] and r['cpu_count'] == os.cpu_count()
  assert last_error(run_module('launch.first_step', f'--checkout=.,{tmp_path}', ok=False)) == (
      f'error: --checkout names {tmp_path}, which is not a git checkout.')


def test_import_time_times_an_import_after_those_before_it():
  """The heaviest process of a round: lnl_jax.main timed after NumPy, ml_dtypes, JAX and TensorFlow
  as the commands import it (the timer's own loader for it). A whole round takes four TensorFlow
  imports (15 s or more here), so one process stands for it."""
  name, before = import_time.STEPS[-1]
  assert name == 'lnl_jax.main' and before[-1] == import_time.WITHOUT_KERAS
  assert import_time.import_seconds(name, before) > 0
  with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['rounds=1'\]"):
    import_time.main(['import_time', 'rounds=1'])


def test_init_study_refuses_steps_it_cannot_record_and_unknown_inits():
  """Before it draws its faces: a run it accepted would train for a minute or more."""
  for flags in (['--steps=75'], ['--inits=he,glorot']):
    assert last_error(run_module('launch.init_study', *flags, ok=False, timeout=60)) == (
        'error: --inits must be among xavier, he and --steps a positive multiple of 50.')


def test_peer_ratio_refuses_a_peer_that_cannot_run_before_it_benches(tmp_path):
  """The first JAX bench takes minutes at the full model (past the limit here): a peer that cannot
  run, or a --checkout that is not a git checkout, ends the command before it."""
  script = tmp_path / 'bench_torch.py'
  script.write_text('')
  run = lambda *flags: last_error(run_module('launch.peer_ratio', *flags, ok=False, timeout=60))
  assert run('--peer_python=/no/python', f'--peer_script={script}') == (
      'error: --peer_python=/no/python is not a program that can be run.')
  assert run(f'--peer_python={sys.executable}', '--peer_script=/no/bench.py') == (
      'error: --peer_script=/no/bench.py is not a file.')
  assert run(f'--peer_python={sys.executable}', f'--peer_script={script}',
             '--checkout=/no/checkout') == (
      'error: --checkout names /no/checkout, which is not a git checkout.')
