"""The whole stack learns: `python -m lnl_jax.main` at smoke size, trained long enough to leave
chance well behind. The suite's longest test, in a file of its own so that it runs beside the others
(pytest-xdist distributes whole files)."""
import json
import os

from processes import run_main


def test_smoke_model_learns_synthetic_faces(tmp_path):
  """Well above chance (1/7 = 14.3 %) within the test's budget: the whole stack learns.

  1,400 faces, 10 epochs of 43 steps, the smoke model with a 64-32 head: the smoke config's 32-16
  head sits on the chance plateau for a seed-dependent time, so bit-level differences in the update
  decide whether it leaves it within 10 epochs; the wider head leaves it within a few epochs.
  Chance accuracy on 280 test faces has a std of ~2.1 points: 25 % is 5σ above it.
  """
  workdir = str(tmp_path / 'learn')
  run_main(workdir, '--config.data.num_train=1400', '--config.data.num_test=280',
           '--config.data.limit=0', '--config.train.num_epochs=10',
           '--config.train.batch_size=32', '--config.train.learning_rate=1e-3',
           '--config.train.log_every_steps=43', '--config.train.track_every_steps=1000',
           '--config.model.head_widths=(64, 32)',
           optimised=True)  # 430 steps: they gain more from optimised code than its compile costs
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['test_accuracy_mean_last_epochs'] > 25.0, summary
  assert summary['test_accuracy_best'] > 30.0, summary
