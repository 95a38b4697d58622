"""A workdir written by an earlier version of the code (tests/data/old_workdir: checkpoint 3 of a
tiny smoke run) still resumes with `lnl_jax.main` and loads in `lnl_jax.predict`."""
import json
import os
import shutil

import numpy as np
from PIL import Image

from lnl_jax import checkpoints
from fixtures import ROOT, run_module

OLD_WORKDIR = os.path.join(ROOT, 'tests', 'data', 'old_workdir')
# The config the fixture was trained with (its config.json), one step further.
FLAGS = ('--config=configs/synthetic.py:smoke', '--config.model.width=0.015625',
         '--config.model.num_patches=4', '--config.model.head_widths=(8, 8)',
         '--config.data.num_train=48', '--config.data.num_test=16', '--config.data.limit=48',
         '--config.train.track_faces=2',
         '--config.train.num_epochs=2', '--config.train.max_steps=4')


def test_old_workdir_resumes_and_predicts(tmp_path):
  workdir = str(tmp_path / 'old_workdir')
  shutil.copytree(OLD_WORKDIR, workdir)
  old = checkpoints.load_trained(workdir)  # the checkpoint as the earlier code wrote it
  assert old.step == 3 and old.class_names[0] == 'surprise'

  log = run_module('lnl_jax.main', f'--workdir={workdir}', *FLAGS).stderr
  assert 'resuming at step 3' in log
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in records] == [3, 4]
  assert checkpoints.load_trained(workdir).step == 4

  image = str(tmp_path / 'face.png')
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(image)
  row = json.loads(run_module('lnl_jax.predict', f'--workdir={workdir}', '--checkpoint=3', '--json',
                       image).stdout)  # the checkpoint the earlier code wrote
  assert row['prediction'] in old.class_names
  assert abs(sum(row['probabilities'].values()) - 1) < 1e-5
