"""k-fold cross-validation (CK+, MMI: the paper's 5-fold protocol): every fold trained, summarised.

  python -m launch.cross_validate --config=configs/ckplus.py --runs_dir=runs/ckplus \\
      --config.data.root=/data/CK+
  python -m launch.cross_validate --config=configs/mmi.py:cpu --runs_dir=runs/mmi --print_only

Fold k (`data.fold = k`, k = 0..data.num_folds−1) trains in `runs_dir/fold_k`; finished folds are
skipped and half-trained ones resume, as in `launch.sweep`. When every fold has finished,
`runs_dir/cv_summary.json` gets the per-fold figures and their mean ± std (sample standard
deviation, ddof = 1) — the mean test accuracy of the last epochs (the paper's figure) and the
last-epoch accuracy — and the pooled accuracy of the summed confusion matrices (every image is
tested exactly once over the folds). After `--print_only` and a cluster run, run the command again
without it to write the summary.

Datasets with an official test split (RAF-DB, AffectNet, SFEW, FER2013, FERPlus, the synthetic
faces, class folders with `train/` and `test/`) are refused: their folds would not be the paper's
protocol.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
from absl import app, flags, logging

from launch import runs
from lnl_jax import cli, io, metrics
from lnl_jax.data.datasets import DATASETS
from lnl_jax.errors import ConfigError
from lnl_jax.report import paper_accuracy

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_config_flag()
cli.define_once(flags.DEFINE_string, 'runs_dir', None,
                'Fold k trains in runs_dir/fold_k; cv_summary.json here.')
cli.define_once(flags.DEFINE_bool, 'print_only', False,
                'Print one lnl_jax.main command per unfinished fold.')


def check_kfold(data: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless `data` is a dataset the project splits by k-fold."""
  kfold = sorted(name for name, (_, official) in DATASETS.items() if official is None)
  official = data.name not in DATASETS or DATASETS[data.name][1] is not None
  if data.name == 'folder' and data.root and all(
      os.path.isdir(os.path.join(data.root, s)) for s in ('train', 'test')):
    official, what = True, f'{data.root} has train/ and test/ folders, an official split'
  else:
    what = f'data.name={data.name!r} has an official train/test split'
  if official:
    raise ConfigError(f'{what}: cross-validation is for the k-fold datasets ({", ".join(kfold)}). '
                      'Train it once with python -m lnl_jax.main, or repeat seeds with '
                      '--config.seed=K.')
  if data.num_folds < 2:
    raise ConfigError(f'data.num_folds={data.num_folds}; cross-validation needs at least 2 folds.')


def folds(num_folds: int) -> list[runs.Member]:
  return [runs.Member(f'fold_{k}', {'data.fold': k}) for k in range(num_folds)]


def _mean_std(values) -> dict:
  mean, std = metrics.mean_std(values)
  return dict(mean=mean, std=std)


def summarize(summaries: list[dict]) -> dict:
  """cv_summary.json from the folds' summary.json dicts (in fold order)."""
  per_fold = [dict(fold=k, test_accuracy_mean_last_epochs=s['test_accuracy_mean_last_epochs'],
                   test_accuracy_last_epoch=s['test_accuracy_last_epoch'],
                   mean_over_epochs=s['mean_over_epochs'],
                   num_test=int(np.sum(s['confusion_matrix'])))
              for k, s in enumerate(summaries)]
  cm = np.sum([np.asarray(s['confusion_matrix'], np.int64) for s in summaries], axis=0)
  return dict(
      num_folds=len(summaries), folds=per_fold,
      mean_of_last_epochs=_mean_std([f['test_accuracy_mean_last_epochs'] for f in per_fold]),
      last_epoch=_mean_std([f['test_accuracy_last_epoch'] for f in per_fold]),
      pooled_accuracy=100.0 * float(np.trace(cm)) / max(int(cm.sum()), 1),
      confusion_matrix=cm.tolist(), class_names=summaries[0].get('class_names'),
      std='sample standard deviation over folds (ddof=1)')


def write_summary(config: ml_collections.ConfigDict, runs_dir: str) -> dict | None:
  """Writes runs_dir/cv_summary.json once every fold has finished (`runs.is_done`); returns it
  (None if not yet)."""
  members = folds(config.data.num_folds)
  unfinished = [m.name for m in members
                if not runs.is_done(os.path.join(runs_dir, m.name), runs.member_config(config, m))]
  if unfinished:
    logging.warning('%d of %d folds have not finished yet (e.g. %s); cv_summary.json not written.',
                    len(unfinished), len(members), os.path.join(runs_dir, unfinished[0]))
    return None
  paths = [os.path.join(runs_dir, m.name, 'summary.json') for m in members]
  summaries = []
  for p in paths:
    with open(p) as f:
      summaries.append(json.load(f))
  cv = summarize(summaries)
  cv.update(dataset=config.data.name, config=config.name, seed=config.seed,
            paper_accuracy=paper_accuracy(config.to_dict()))
  io.write_json(os.path.join(runs_dir, 'cv_summary.json'), cv)
  return cv


def describe(cv: dict) -> str:
  """One line: the folds' mean ± std of both figures, and the paper's number."""
  a, b = cv['mean_of_last_epochs'], cv['last_epoch']
  n = {f['mean_over_epochs'] for f in cv['folds']}
  line = (f'{cv["dataset"]} {cv["num_folds"]}-fold CV: mean test accuracy of the last '
          f'{"/".join(map(str, sorted(n)))} epochs {a["mean"]:.2f} ± {a["std"]:.2f}%, last epoch '
          f'{b["mean"]:.2f} ± {b["std"]:.2f}%, pooled {cv["pooled_accuracy"]:.2f}%')
  if cv.get('paper_accuracy') is not None:
    line += f' (paper {cv["paper_accuracy"]:.2f}%)'
  return line


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, overrides = FLAGS.config, dict(FLAGS['config'].override_values)
  try:
    check_kfold(config.data)
    if 'data.fold' in overrides:
      raise ConfigError('--config.data.fold is set on the command line, but cross-validation runs '
                        'every fold; drop the flag.')
  except ConfigError as e:
    cli.fail(str(e))
  members = folds(config.data.num_folds)
  if FLAGS.print_only:
    runs.print_commands(config, FLAGS['config'].config_filename, FLAGS.runs_dir, members,
                        overrides)
    return
  cli.setup_process()
  cli.run_or_exit(runs.run_members, config, FLAGS.runs_dir, members,
                  cli.data_cache_dir(FLAGS.data_cache))
  cv = write_summary(config, FLAGS.runs_dir)
  if cv is not None:
    print(describe(cv))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'runs_dir'])
  cli.run(main)
