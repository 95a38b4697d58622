"""The paper's experiments as commands: sweeps, cross-validation, the report, the attention analyses.

The sweep, cross-validation and analysis CLIs run end to end at smoke size (one process each, one
CPU device, sharing the session's compilation cache: the cross-validation folds and the analysis
compile the same programs as the sweep's LNLAttenNet member); the report and the analyses' array functions are
checked against hand-written fixtures whose answers are known independently.
"""
import json
import os
import re

import ml_collections
import numpy as np
import pytest

from launch import cross_validate, runs, sweep
from lnl_jax import analysis, paper, report
from lnl_jax.data import synthetic
from lnl_jax.config_base import base_config, dataset_config
from lnl_jax.errors import ConfigError
from lnl_jax.geometry import patch_geometry
import fixtures
from fixtures import GRID_BOXES as BOXES, run_module

# Smoke faces, cut to one training step per epoch (16 train / 16 test faces).
SMALL = ('--config.data.num_train=16', '--config.data.num_test=16')


def load(path):
  with open(path) as f:
    return json.load(f)


# --- sweep ----------------------------------------------------------------------------------------

def test_print_only_prints_one_command_per_unfinished_member(tmp_path):
  runs = str(tmp_path)
  os.makedirs(os.path.join(runs, 'ablation', 'attention_local'))
  with open(os.path.join(runs, 'ablation', 'attention_local', 'summary.json'), 'w') as f:
    json.dump(dict(epochs=1000, steps=10**6, steps_per_epoch=1), f)  # more than asked: done
  proc = run_module('launch.sweep', '--config=configs/raf.py:cpu', '--sweep=ablation',
             f'--runs_dir={runs}', '--print_only', '--config.data.root=/data/RAF DB')
  cmd = 'python -m lnl_jax.main --config=configs/raf.py:cpu'
  assert proc.stdout.splitlines() == [
      f"{cmd} --workdir={runs}/ablation/{name} '--config.data.root=/data/RAF DB' "
      f'--config.model.attention={attention}'
      for name, attention in (('attention_none', 'none'), ('attention_nonlocal', 'nonlocal'),
                              ('attention_both', 'both'))]
  assert 'attention_local: done' in proc.stderr


def test_a_member_is_done_when_its_summary_shows_the_configs_schedule(tmp_path):
  config = ml_collections.ConfigDict(dict(train=dict(num_epochs=2, max_steps=0)))

  def done(**summary):
    with open(tmp_path / 'summary.json', 'w') as f:
      json.dump(summary, f)
    return runs.is_done(str(tmp_path), config)

  assert not runs.is_done(str(tmp_path), config)  # no summary.json
  assert done(epochs=2, steps=12, steps_per_epoch=6)
  assert not done(epochs=1, steps=3, steps_per_epoch=6)  # a quick check with max_steps=3
  # max_steps=7 ended the second epoch after one step: two epochs evaluated, 12 steps asked for.
  assert not done(epochs=2, steps=7, steps_per_epoch=6)
  assert not done(epochs=2, steps=12)  # a summary that does not say its steps per epoch
  config.train.max_steps = 3
  assert done(epochs=1, steps=3, steps_per_epoch=6)
  assert not done(epochs=0, steps=2, steps_per_epoch=6)
  config.train.max_steps = 100
  assert done(epochs=2, steps=12, steps_per_epoch=6)  # the epochs end it before max_steps


def test_sweep_members_follow_the_paper():
  alpha = sweep.members('alpha', 144)
  assert [m.overrides['model.alpha'] for m in alpha] == [0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1]
  assert [m.name for m in alpha][:2] == ['alpha_0', 'alpha_0.1']
  # Eq. (5) with γ = 1/3 at 144 px: overlap = P/3 = 144/(2n+1), 16 px for the paper's M = 16.
  patches = sweep.members('patches', 144)
  assert [(m.overrides['model.num_patches'], m.overrides['model.overlap']) for m in patches] == [
      (4, 29), (9, 21), (16, 16), (25, 13), (36, 11)]
  assert [m.overrides['model.overlap'] for m in sweep.members('overlap', 144)] == [8, 12, 16, 20, 22]
  assert [m.overrides['model.overlap'] for m in sweep.members('overlap', 72)] == [4, 6, 8, 10, 11]
  assert [m.name for m in sweep.select(alpha, ['7', '3'])] == ['alpha_0.7', 'alpha_0.3']
  for bad in ('11', '-1'):  # -1 is no index of --members (not Python's last one)
    with pytest.raises(ConfigError, match='11 members, 0..10'):
      sweep.select(alpha, [bad])
  with pytest.raises(ConfigError, match='--config.model.alpha'):
    sweep.check_overrides('alpha', {'model.alpha': 0.5})
  # Table VI ties the overlap to M (Eq. 5): a --config.model.overlap flag would be overwritten too.
  with pytest.raises(ConfigError, match='--config.model.overlap'):
    sweep.check_overrides('patches', {'model.overlap': 8})
  with pytest.raises(ConfigError, match='patches_25.*data.image_size=64'):
    runs.check_members(dataset_config('synthetic', 'smoke'), sweep.members('patches', 64))
  with pytest.raises(ConfigError, match='does not fit --sweep=ablation'):
    sweep.members('ablation', 144, ['both', 'global'])


def test_member_commands_keep_tuples_and_members_leave_the_config_alone():
  """A printed command must give lnl_jax.main the values the member trains with: a one-element
  tuple is written `(64,)` (`(64)` would be read back as the int 64), a float as Python writes it.
  And each member's config is a copy: setting a member's fields leaves the sweep's config as it
  was."""
  text = runs.command('configs/raf.py', {'model.head_widths': (64,), 'model.alpha': 0.3},
                      '--workdir=w')
  assert text == ("python -m lnl_jax.main --config=configs/raf.py --workdir=w "
                  "'--config.model.head_widths=(64,)' --config.model.alpha=0.3")
  config = base_config()
  member = runs.member_config(config, runs.Member('m', {'model.alpha': 0.3, 'data.fold': 2}))
  assert (member.model.alpha, member.data.fold) == (0.3, 2)
  assert (config.model.alpha, config.data.fold) == (0.7, 0)


def test_overlap_sweep_rounds_each_144_px_overlap_to_the_nearest_pixel():
  """At 64 px the overlap sweep scales Table VII's 8, 12, 16, 20, 22 px by 64/144 to 3.56, 5.33,
  7.11, 8.89 and 9.78 px and rounds them: 4, 5, 7, 9, 10 px, the overlaps the report then sets
  beside their 144-px columns. Cutting the fractions off instead would train 3, 5, 7, 8, 9 px, two
  of them a pixel away from the columns they stand for."""
  assert [m.overrides['model.overlap'] for m in sweep.members('overlap', 64)] == [4, 5, 7, 9, 10]
  assert [m.name for m in sweep.members('overlap', 64)][0] == 'overlap_4'


def test_benchmark_records_are_appended_to_their_file(tmp_path, capsys):
  """`runs.report` prints each record as a JSON line and appends it to its file: a second record
  keeps the first (a benchmark file collects every run's records); with no file it only prints."""
  out = str(tmp_path / 'bench.jsonl')
  runs.report(dict(what='train_step', batch=8), out)
  runs.report(dict(what='train_step', batch=16), out)
  runs.report(dict(what='eval'), '')
  with open(out) as f:
    assert [json.loads(line) for line in f] == [dict(what='train_step', batch=8),
                                                dict(what='train_step', batch=16)]
  assert capsys.readouterr().out.splitlines()[-1] == '{"what": "eval"}'


MEMBERS = ('attention_none', 'attention_both')


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  """Model-S and LNLAttenNet of the ablation trained at smoke size, then the same command again."""
  runs = str(tmp_path_factory.mktemp('runs'))
  args = ['--config=configs/synthetic.py:smoke', '--sweep=ablation', f'--runs_dir={runs}',
          '--members=0,3', *SMALL]
  run_module('launch.sweep', *args)
  summaries = {m: os.path.join(runs, 'ablation', m, 'summary.json') for m in MEMBERS}
  times = {m: os.path.getmtime(p) for m, p in summaries.items()}
  rerun = run_module('launch.sweep', *args)
  return runs, times, rerun


def test_sweep_trains_members_and_skips_finished_ones(swept):
  runs, times, rerun = swept
  assert sorted(os.listdir(os.path.join(runs, 'ablation'))) == sorted(MEMBERS)
  for name in MEMBERS:
    workdir = os.path.join(runs, 'ablation', name)
    config = load(os.path.join(workdir, 'config.json'))
    assert config['model']['attention'] == name.split('_')[1]
    assert config['seed'] == 0  # the seed is recorded
    summary = load(os.path.join(workdir, 'summary.json'))
    assert summary['epochs'] == 2 and np.sum(summary['confusion_matrix']) == 16
    assert os.path.getmtime(os.path.join(workdir, 'summary.json')) == times[name]  # not rerun
    assert f'{name}: done already' in rerun.stderr
  assert 'training in' not in rerun.stderr

  text = report.build_report(runs, os.path.join(runs, 'report.md'))
  accuracy = {n: load(os.path.join(runs, 'ablation', n, 'summary.json'))
                 ['test_accuracy_mean_last_epochs'] for n in MEMBERS}
  # No paper numbers for synthetic faces.
  assert f'| Model-S | none | {accuracy["attention_none"]:.2f} | unknown | — |' in text
  assert f'| LNLAttenNet | both | {accuracy["attention_both"]:.2f} | unknown | — |' in text
  assert 'Table IV' in text and os.path.exists(os.path.join(runs, 'report_ablation_ablation.png'))


# --- cross-validation -----------------------------------------------------------------------------

CLASSES = ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')


def test_cross_validate_trains_every_fold_and_summarises(tmp_path):
  root = fixtures.write_class_folders(str(tmp_path / 'faces'), {c: 5 for c in CLASSES}, '.png', 10)
  runs = str(tmp_path / 'cv')
  proc = run_module('launch.cross_validate', '--config=configs/folder.py:smoke', f'--runs_dir={runs}',
             f'--config.data.root={root}', '--config.data.num_folds=2')
  folds = [load(os.path.join(runs, f'fold_{k}', 'summary.json')) for k in (0, 1)]
  configs = [load(os.path.join(runs, f'fold_{k}', 'config.json')) for k in (0, 1)]
  assert [c['data']['fold'] for c in configs] == [0, 1]
  cv = load(os.path.join(runs, 'cv_summary.json'))
  a = [f['test_accuracy_mean_last_epochs'] for f in folds]
  b = [f['test_accuracy_last_epoch'] for f in folds]
  assert cv['num_folds'] == 2
  assert cv['mean_of_last_epochs']['mean'] == pytest.approx((a[0] + a[1]) / 2)
  assert cv['mean_of_last_epochs']['std'] == pytest.approx(abs(a[0] - a[1]) / np.sqrt(2))
  assert cv['last_epoch']['mean'] == pytest.approx((b[0] + b[1]) / 2)
  cm = np.array(cv['confusion_matrix'])
  assert cm.sum() == 35  # every face tested exactly once over the folds
  assert cv['pooled_accuracy'] == pytest.approx(100 * np.trace(cm) / 35)
  assert f'{(a[0] + a[1]) / 2:.2f} ± {abs(a[0] - a[1]) / np.sqrt(2):.2f}%' in proc.stdout


def test_cv_summary_last_epoch_is_the_folds_last_epoch_accuracies():
  folds = [dict(test_accuracy_mean_last_epochs=90.0, test_accuracy_last_epoch=95.0,
                mean_over_epochs=10, confusion_matrix=[[5, 1], [0, 4]], class_names=['a', 'b']),
           dict(test_accuracy_mean_last_epochs=80.0, test_accuracy_last_epoch=91.0,
                mean_over_epochs=10, confusion_matrix=[[3, 0], [2, 5]], class_names=['a', 'b'])]
  cv = cross_validate.summarize(folds)
  assert cv['mean_of_last_epochs'] == pytest.approx(dict(mean=85.0, std=10 / np.sqrt(2)))
  assert cv['last_epoch'] == pytest.approx(dict(mean=93.0, std=4 / np.sqrt(2)))
  assert cv['confusion_matrix'] == [[8, 1], [2, 9]]
  assert cv['pooled_accuracy'] == pytest.approx(100 * 17 / 20)
  assert [f['num_test'] for f in cv['folds']] == [10, 10]


def test_cross_validate_refuses_official_splits(tmp_path):
  with pytest.raises(ConfigError, match="data.name='raf' has an official train/test split"):
    cross_validate.check_kfold(dataset_config('raf', None).data)
  with pytest.raises(ConfigError, match='official'):
    cross_validate.check_kfold(dataset_config('synthetic', 'smoke').data)
  for split in ('train', 'test'):
    fixtures.write_class_folders(str(tmp_path / split), {'a': 1})
  with pytest.raises(ConfigError, match='train/ and test/ folders'):
    cross_validate.check_kfold(dataset_config('folder', None, root=str(tmp_path)).data)
  cross_validate.check_kfold(dataset_config('ckplus', None).data)  # k-fold: accepted


def test_a_member_that_cannot_train_is_named(tmp_path):
  """A member refused by training (here its workdir holds a run with another α, which cannot be
  resumed) ends the sweep with an error that names the member and its workdir, so that the user
  knows which of the sweep's runs to look at."""
  root = fixtures.write_class_folders(str(tmp_path / 'faces'), {c: 5 for c in CLASSES}, '.png', 10)
  config = dataset_config('folder', 'smoke', root=root)
  workdir = tmp_path / 'alpha' / 'alpha_0.3'
  workdir.mkdir(parents=True)
  other = runs.member_config(config, runs.Member('alpha_0.5', {'model.alpha': 0.5}))
  (workdir / 'config.json').write_text(other.to_json_best_effort())
  member = runs.Member('alpha_0.3', {'model.alpha': 0.3})
  named = re.escape(f'sweep member alpha_0.3 ({workdir}): ')
  with pytest.raises(ConfigError, match=f'^{named}.*model.alpha=0.5'):
    runs.run_members(config, str(tmp_path / 'alpha'), [member])


def write_fold(runs_dir, fold, steps, accuracy, last, confusion):
  """A fold's summary.json as training writes it, at `steps` of a 3-epoch, 2-steps-per-epoch
  schedule, averaged over all 3 epochs."""
  os.makedirs(os.path.join(runs_dir, f'fold_{fold}'), exist_ok=True)
  with open(os.path.join(runs_dir, f'fold_{fold}', 'summary.json'), 'w') as f:
    json.dump(dict(epochs=3, steps=steps, steps_per_epoch=2, mean_over_epochs=3,
                   test_accuracy_mean_last_epochs=accuracy, test_accuracy_last_epoch=last,
                   confusion_matrix=confusion, class_names=['a', 'b']), f)


def test_cv_summary_waits_for_every_fold_and_sets_the_papers_number(tmp_path):
  """cv_summary.json is written only once every fold has trained its whole schedule: a fold that
  has a summary.json but stopped early (4 of its 6 steps) holds it back, and nothing is written.
  Then it carries the paper's number for the setting, CK+ at the paper's LNLAttenNet: 98.18 %
  (Table IV), which the printed line quotes beside both folds' figures."""
  runs_dir = str(tmp_path)
  config = dataset_config('ckplus', None)
  config.data.num_folds, config.train.num_epochs, config.train.max_steps = 2, 3, 0
  write_fold(runs_dir, 0, 6, 96.0, 95.0, [[4, 1], [0, 5]])
  write_fold(runs_dir, 1, 4, 90.0, 90.0, [[5, 0], [1, 4]])
  assert cross_validate.write_summary(config, runs_dir) is None
  assert not os.path.exists(tmp_path / 'cv_summary.json')
  write_fold(runs_dir, 1, 6, 98.0, 99.0, [[5, 0], [1, 4]])
  cv = cross_validate.write_summary(config, runs_dir)
  assert load(tmp_path / 'cv_summary.json') == cv
  assert cv['paper_accuracy'] == 98.18 and cv['dataset'] == 'ckplus'
  assert cv['mean_of_last_epochs'] == pytest.approx(dict(mean=97.0, std=2 / np.sqrt(2)))
  assert cv['pooled_accuracy'] == pytest.approx(100 * 18 / 20)
  assert cross_validate.describe(cv) == (
      'ckplus 2-fold CV: mean test accuracy of the last 3 epochs 97.00 ± 1.41%, last epoch '
      '97.00 ± 2.83%, pooled 90.00% (paper 98.18%)')


def test_cross_validation_needs_two_folds_and_runs_each_of_them(tmp_path):
  """One fold is no cross-validation (every face would be a test face, none left to train
  on): refused. A --config.data.fold flag would pin every fold to one: refused too, before
  anything is trained or printed. The refusal of an official split names the k-fold datasets."""
  config = dataset_config('ckplus', None)
  config.data.num_folds = 1
  with pytest.raises(ConfigError, match='at least 2 folds'):
    cross_validate.check_kfold(config.data)
  with pytest.raises(ConfigError, match=r'k-fold datasets \(ckplus, folder, jaffe, mmi\)'):
    cross_validate.check_kfold(dataset_config('raf', None).data)
  proc = run_module('launch.cross_validate', '--config=configs/ckplus.py',
                    f'--runs_dir={tmp_path}', '--print_only', '--config.data.fold=1', ok=False)
  assert proc.returncode != 0 and '--config.data.fold is set' in proc.stderr
  assert proc.stdout == ''


# --- report ---------------------------------------------------------------------------------------

def write_run(workdir, dataset, accuracy, last=None, **fields):
  """A finished (accuracy given) or unfinished (None) run at the paper's full-size config."""
  config = base_config()
  config.data.name = dataset
  for dotted, value in fields.items():
    section, key = dotted.split('__')
    config[section][key] = value
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  if accuracy is not None:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(dict(test_accuracy_mean_last_epochs=accuracy,
                     test_accuracy_last_epoch=last or accuracy, mean_over_epochs=10, epochs=24,
                     confusion_matrix=[[1]]), f)


def test_report_lays_out_the_papers_tables(tmp_path):
  runs = str(tmp_path / 'runs')
  for attention, acc in (('none', 83.0), ('local', 84.55), ('nonlocal', 85.5), ('both', 86.0)):
    write_run(f'{runs}/ablation/attention_{attention}', 'raf', acc, model__attention=attention)
  for overlap, acc in ((8, 84.0), (12, 85.0), (16, None), (22, 86.5)):
    write_run(f'{runs}/overlap/overlap_{overlap}', 'raf', acc, model__overlap=overlap)
  for alpha, acc in ((0.3, 57.0), (0.7, 57.5)):
    write_run(f'{runs}/sfew_alpha/alpha_{alpha}', 'sfew', acc, model__alpha=alpha)
  for fold, (acc, last) in enumerate(((97.0, 96.0), (99.0, 100.0))):
    write_run(f'{runs}/ckplus_cv/fold_{fold}', 'ckplus', acc, last, data__fold=fold)
  write_run(f'{runs}/affectnet/main', 'affectnet', 60.0)
  write_run(f'{runs}/affectnet_s/main', 'affectnet', 55.0, model__attention='none')

  text = report.build_report(runs, str(tmp_path / 'report.md'))
  expected = '\n'.join([
      '| Model | model.attention | ours (%) | paper (%) | Δ |',
      '|---|---|---|---|---|',
      '| Model-S | none | 83.00 | 83.80 | -0.80 |',
      '| Model-Local | local | 84.55 | 84.55 | +0.00 |',
      '| Model-NonLocal | nonlocal | 85.50 | 85.04 | +0.46 |',
      '| LNLAttenNet | both | 86.00 | 86.15 | -0.15 |'])
  assert expected in text
  assert '\n'.join([
      '| 8 | 8 | 84.00 | unknown | — |',
      '| 12 | 12 | 85.00 | 85.29 | -0.29 |',
      '| 16 | 16 | — | 86.15 | — |',  # unfinished
      '| 22 | 22 | 86.50 | 86.24 | +0.26 |']) in text
  assert 'Unfinished (no summary.json yet): overlap/overlap_16.' in text
  assert '| 0.3 | 57.00 | 57.80 | -0.80 |\n| 0.7 | 57.50 | 56.88 | +0.62 |' in text  # Table V, SFEW
  assert '| mean ± std | 98.00 ± 1.41 | 98.00 ± 2.83 |' in text
  assert 'Paper: 98.18%; ours (2-fold cross-validation, mean): 98.00%; Δ = -0.18.' in text
  setting = 'α=0.7, M=16, overlap=16 px, 144 px'
  assert f'| affectnet/main | AffectNet | both, {setting} | 60.00 | 59.28 | +0.72 |' in text
  assert f'| affectnet_s/main | AffectNet | none, {setting} | 55.00 | 56.26 | -1.26 |' in text
  for name in ('report_ablation_ablation.png', 'report_overlap_overlap.png',
               'report_sfew_alpha_alpha.png'):
    assert os.path.getsize(tmp_path / name) > 1000


def test_paper_numbers_follow_the_setting():
  config = base_config().to_dict()
  config['data']['name'] = 'raf'
  assert report.paper_accuracy(config) == 86.15
  config['model']['num_patches'], config['model']['overlap'] = 36, 11  # Table VI, Eq. (5) overlap
  assert report.paper_accuracy(config) == 85.63
  config['model']['alpha'] = 0.5  # two settings away from the paper's: no counterpart
  assert report.paper_accuracy(config) is None
  # Table VII at another image size: 96 px with 13 px ≈ 144 px with 19.5 px → the 20-px column.
  assert report.paper_value('overlap', 'raf', 13, 96) == 86.16
  assert report.paper_value('overlap', 'raf', 9, 144) is None
  assert report.paper_value('alpha', 'mmi', 1.0) == 66.25
  assert report.paper_value('ablation', 'synthetic', 'none') is None


def test_report_at_64_px_sets_each_overlap_beside_the_nearest_144_px_column():
  """The overlap sweep at 64 px runs round(o · 64/144) px for its o = 8, 12, 16, 20, 22 (Table
  VII's columns, 8 px being the sweep's guess for the one the PDF does not render):
  4, 5, 7, 9, 10 px, i.e. 9, 11.25, 15.75, 20.25, 22.5 px at 144 px. Each lies within half a 64-px
  pixel (1.125 px at 144 px) of its column, so each gets that column's number (8 px: none); a
  value whose runs are not all finished is the mean of the finished ones, not called a mean of
  several. At 144 px, 17 px is one pixel off Eq. (5)'s 16 px (γ = 1/3): a setting the paper does
  not report."""
  def run(overlap, accuracy, name):
    config = base_config().to_dict()
    config['data'].update(name='raf', image_size=64)
    config['model']['overlap'] = overlap
    summary = None if accuracy is None else dict(test_accuracy_mean_last_epochs=accuracy)
    return report.Run(f'overlap/{name}', config, summary)

  members = [run(4, 84.0, 'o4'), run(5, 85.0, 'o5'), run(7, 86.0, 'o7'), run(9, 86.1, 'o9'),
             run(10, 86.3, 'o10'), run(10, None, 'o10_again')]
  _, rows, _ = report.sweep_rows('overlap', members)
  assert rows == [['4', '9', '84.00', 'unknown', '—'],
                  ['5', '11.2', '85.00', '85.29', '-0.29'],
                  ['7', '15.8', '86.00', '86.15', '-0.15'],
                  ['9', '20.2', '86.10', '86.16', '-0.06'],
                  ['10', '22.5', '86.30', '86.24', '+0.06']]
  assert report.paper_value('overlap', 'raf', 5, 64) == 85.29
  config = base_config().to_dict()
  config['data']['name'] = 'raf'
  config['model']['overlap'] = 17
  assert report.paper_accuracy(config) is None


def test_report_lays_out_a_patches_sweep_beside_table_vi(tmp_path):
  """A Table VI sweep changes M and, by Eq. (5), the overlap with it: its members differ in both
  fields and still form Table VI, each M beside the paper's RAF-DB number (84.97, 85.66, 86.15,
  85.53, 85.63 for M = 4 … 36). The note says over which epochs ours is averaged: the last 10 of
  24."""
  runs = str(tmp_path / 'runs')
  for (m, overlap), acc in zip(((4, 29), (9, 21), (16, 16), (25, 13), (36, 11)),
                               (85.0, 85.5, 86.0, 85.0, 85.63)):
    write_run(f'{runs}/patches/patches_{m}', 'raf', acc, model__num_patches=m,
              model__overlap=overlap)
  text = report.build_report(runs)
  assert 'Table VI: number of patches M — RAF-DB' in text
  assert '\n'.join([
      '| M | overlap (px) | ours (%) | paper (%) | Δ |', '|---|---|---|---|---|',
      '| 4 | 29 | 85.00 | 84.97 | +0.03 |', '| 9 | 21 | 85.50 | 85.66 | -0.16 |',
      '| 16 | 16 | 86.00 | 86.15 | -0.15 |', '| 25 | 13 | 85.00 | 85.53 | -0.53 |',
      '| 36 | 11 | 85.63 | 85.63 | +0.00 |']) in text
  assert 'ours: mean test accuracy of the last 10 of 24 epochs (the paper: last 10 of 24)' in text


def test_runs_of_two_datasets_in_one_folder_are_not_one_table(tmp_path):
  """Runs side by side form a table only when they share the dataset: a RAF-DB run and an SFEW run
  in one folder are two single runs, each beside its own dataset's headline number (86.15, 57.80),
  not a table of runs differing in data.name."""
  runs = str(tmp_path / 'runs')
  write_run(f'{runs}/mixed/raf_main', 'raf', 86.0)
  write_run(f'{runs}/mixed/sfew_main', 'sfew', 57.0)
  text = report.build_report(runs)
  assert 'Runs differing in' not in text and '## Single runs' in text
  setting = 'both, α=0.7, M=16, overlap=16 px, 144 px'
  assert f'| mixed/raf_main | RAF-DB | {setting} | 86.00 | 86.15 | -0.15 |' in text
  assert f'| mixed/sfew_main | SFEW 2.0 | {setting} | 57.00 | 57.80 | -0.80 |' in text


def test_repeated_seeds_are_listed_in_seed_order():
  """The rows of repeated seeds follow the seed as a number: seed 2 before seed 10, whatever the
  workdirs' names sort to."""
  def run(seed, accuracy):
    config = base_config().to_dict()
    config['data']['name'] = 'raf'
    config['seed'] = seed
    summary = dict(test_accuracy_mean_last_epochs=accuracy, test_accuracy_last_epoch=accuracy)
    return report.Run(f'seeds/seed_{seed}', config, summary)

  _, rows, line = report.repeat_rows('seeds', [run(10, 85.0), run(2, 87.0)])
  assert [r[:2] for r in rows] == [['2', '87.00'], ['10', '85.00'], ['mean ± std', '86.00 ± 1.41']]
  assert line.startswith('Paper: 86.15%; ours (2 seeds, mean): 86.00%; Δ = -0.15.')


# Tables IV–VII of the paper, typed again by hand from its text (test accuracy, %), apart from
# lnl_jax/paper.py's copy: a typo in either fails the test below. Table IV: the rows of the four
# variants; columns AffectNet, RAF-DB, SFEW, CK+, MMI.
PAPER_TABLE_IV = {
    'none': (56.26, 83.80, 54.82, 94.14, 63.52),  # Model-S
    'local': (57.63, 84.55, 56.42, 96.44, 65.42),  # Model-Local
    'nonlocal': (58.09, 85.04, 55.73, 96.63, 66.56),  # Model-NonLocal
    'both': (59.28, 86.15, 57.80, 98.18, 68.75),  # LNLAttenNet
}
# Table V: α = 0, 0.1, ..., 1.
PAPER_TABLE_V = {
    'raf': (84.09, 85.60, 85.69, 86.15, 85.59, 85.33, 85.17, 85.23, 83.74, 83.54, 83.02),
    'sfew': (55.06, 55.73, 56.88, 57.80, 57.34, 57.11, 56.65, 56.88, 55.96, 54.59, 53.67),
    'ckplus': (96.02, 96.75, 97.56, 98.18, 98.30, 97.74, 97.36, 96.60, 96.22, 96.04, 95.28),
    'mmi': (67.00, 67.45, 68.50, 68.75, 68.88, 68.25, 67.50, 67.38, 66.93, 66.50, 66.25),
    'affectnet': (57.94, 58.71, 59.43, 59.28, 58.03, 57.80, 56.83, 56.86, 56.71, 56.66, 56.63),
}
# Table VI: M = 4, 9, 16, 25, 36.
PAPER_TABLE_VI = {
    'raf': (84.97, 85.66, 86.15, 85.53, 85.63),
    'sfew': (55.28, 56.88, 57.80, 58.03, 57.80),
    'ckplus': (96.22, 97.17, 98.18, 97.92, 97.74),
    'mmi': (67.60, 67.90, 68.75, 68.83, 67.13),
    'affectnet': (58.06, 58.43, 59.28, 59.06, 57.97),
}
# Table VII (RAF-DB): the overlaps 12, 16, 20, 22 px; two more columns with unreadable overlaps.
PAPER_TABLE_VII = {12: 85.29, 16: 86.15, 20: 86.16, 22: 86.24}
PAPER_TABLE_VII_UNREADABLE = (84.63, 84.96)


def test_every_paper_number_the_report_uses_is_the_papers():
  """Each number the report and the sweeps set beside a run, looked up the way the report looks
  it up, against the paper's Tables IV–VII as printed."""
  datasets = ('affectnet', 'raf', 'sfew', 'ckplus', 'mmi')
  for attention, row in PAPER_TABLE_IV.items():
    for dataset, value in zip(datasets, row):
      assert report.paper_value('ablation', dataset, attention) == value, (attention, dataset)
  for dataset, row in PAPER_TABLE_V.items():
    for i, value in enumerate(row):
      assert report.paper_value('alpha', dataset, i / 10) == value, (dataset, i / 10)
  for dataset, row in PAPER_TABLE_VI.items():
    for m, value in zip((4, 9, 16, 25, 36), row):
      assert report.paper_value('patches', dataset, m) == value, (dataset, m)
  for overlap, value in PAPER_TABLE_VII.items():
    assert report.paper_value('overlap', 'raf', overlap) == value, overlap
  assert tuple(paper.TABLE_VII_UNREADABLE) == PAPER_TABLE_VII_UNREADABLE


# --- analyses -------------------------------------------------------------------------------------

def test_crucial_mass_on_known_arrays():
  w = np.array([[0.4, 0.4, 0.1, 0.1], [0.25] * 4, [0.1, 0.2, 0.3, 0.4]])
  crucial = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)  # face 2: all crucial
  r = analysis.crucial_mass(2 * w, crucial, labels=[0, 1, 0], class_names=['a', 'b'])
  assert r['num_faces'] == 2 and r['faces_left_out'] == 1
  assert r['mass'] == pytest.approx((0.8 + 0.25) / 2)
  assert r['uniform'] == pytest.approx((0.5 + 0.25) / 2)
  assert r['excess'] == pytest.approx(0.15)
  half = 1.959964 * np.std([0.3, 0.0], ddof=1) / np.sqrt(2)
  assert r['ci95'] == pytest.approx([0.15 - half, 0.15 + half], abs=1e-5)
  assert r['mean_rank'] == pytest.approx((1.5 + 2.5) / 2) and r['rank_uniform'] == 2.5
  assert r['per_class']['a']['mass'] == pytest.approx(0.8)
  assert r['per_class']['b']['uniform'] == pytest.approx(0.25)
  assert 'is not shown' in analysis.crucial_verdict(r)  # interval includes 0
  # All of wᵍ off the crucial patches, on every face: the opposite of the claim.
  away = analysis.crucial_mass(np.tile([[0, 0, 0.5, 0.5]], (3, 1)), np.tile(crucial[:1], (3, 1)))
  assert 'is refuted' in analysis.crucial_verdict(away)
  sure = analysis.crucial_mass(np.tile(w[:1], (3, 1)), np.tile(crucial[:1], (3, 1)))
  verdict = analysis.crucial_verdict(sure)
  assert 'puts 80.0% of its mass on crucial patches against 50.0% uniform' in verdict
  assert 'is confirmed for this model on synthetic faces' in verdict
  assert 'cannot be tested' in analysis.crucial_verdict(sure, attention='local')
  # The same attention from a model at chance says nothing. 49 faces of 7 balanced classes: the
  # most common class is 1/7 of them, and a guesser's accuracy has a standard error of
  # √((1/7)(6/7)/49) = 0.0500, so up to 1/7 + 1.96 × 0.0500 = 24.1 % is what guessing gives.
  balanced = np.arange(49) % 7
  for accuracy, learned in ((12.5, False), (24.0, False), (24.5, True), (90.0, True)):
    verdict = analysis.crucial_verdict(sure, accuracy=accuracy, labels=balanced)
    assert ('is confirmed for this model' in verdict) == learned, verdict
    assert ('this model is at chance' in verdict) != learned, verdict
  assert '(12.5% over 49 faces, the most common class 14.3%)' in analysis.crucial_verdict(
      sure, accuracy=12.5, labels=balanced)
  # 40 of 49 faces in one class: answering it always scores 81.6 %, up to
  # 0.816 + 1.96 × √(0.816 × 0.184 / 49) = 92.5 % is no better than that.
  skewed = np.array([0] * 40 + list(range(1, 7)) + [1, 2, 3])
  assert 'this model is at chance' in analysis.crucial_verdict(sure, accuracy=90.0, labels=skewed)
  assert 'is confirmed' in analysis.crucial_verdict(sure, accuracy=93.0, labels=skewed)
  series = analysis.crucial_over_training([5, 10], np.stack([np.full((1, 4), 0.25), w[:1]]),
                                          crucial[:1])
  assert [s['mass'] for s in series] == pytest.approx([0.5, 0.8])


def grey_sensitive_model(images):
  """wˡ_j = share of patch j's pixels not grey; the prediction is right while pixel (0, 0) is not."""
  grey = np.all(images == analysis.GREY, axis=-1)
  w_local = np.stack([1 - grey[:, t:b, l:r].mean((1, 2)) for t, l, b, r in BOXES], axis=1)
  return dict(prediction=np.where(grey[:, 0, 0], -1, 0), w_local=w_local,
              w_global=np.full((len(images), 9), 1 / 9))


def test_occlusion_lowers_the_occluded_patchs_weight_on_a_known_model():
  images = np.random.default_rng(0).integers(0, 256, (5, 14, 14, 3), dtype=np.uint8)
  images[images == analysis.GREY] = 127
  r = analysis.occlusion_analysis(grey_sensitive_model, images, np.zeros(5, int), BOXES)
  assert r['baseline_w_local'] == pytest.approx([1.0] * 9)
  assert r['own_drop'] == pytest.approx([1.0] * 9)
  # Patch 0 (corner) shares 2×6 px with patches 1 and 3, 2×2 px with patch 4, none with the rest.
  assert r['occluded_w_local'][0] == pytest.approx(
      [0, 1 - 12 / 36, 1, 1 - 12 / 36, 1 - 4 / 36, 1, 1, 1, 1])
  assert r['neighbour_drop'][0] == pytest.approx(28 / 36 / 3)
  assert r['others_drop'][0] == pytest.approx(28 / 36 / 8)
  assert r['far_drop'][0] == 0 and r['far_drop'][4] is None  # the centre patch overlaps every other
  assert r['accuracy'] == [0.0] + [100.0] * 8 and r['baseline_accuracy'] == 100.0
  assert r['own_drop_largest'] == 9
  assert 'is confirmed for this model' in analysis.occlusion_verdict(r)
  # Five faces of five classes: up to 0.2 + 1.96 × √(0.2 × 0.8 / 5) = 55.1 % is what guessing
  # gives; of five faces of one class, 100 % is (answering that class always).
  assert 'is confirmed for this model' in analysis.occlusion_verdict(r, labels=np.arange(5))
  assert 'this model is at chance (20.0% over 5 faces' in analysis.occlusion_verdict(
      dict(r, baseline_accuracy=20.0), labels=np.arange(5))
  assert 'this model is at chance (100.0% over 5 faces' in analysis.occlusion_verdict(
      r, labels=np.zeros(5, int))

  blind = lambda x: dict(grey_sensitive_model(x), w_local=np.full((len(x), 9), 0.7))
  unmoved = analysis.occlusion_analysis(blind, images, np.zeros(5, int), BOXES)
  assert 'is not shown' in analysis.occlusion_verdict(unmoved)
  assert unmoved['own_drop_largest'] == 0  # no patch falls: none falls most (a tie is no win)
  # wˡ rising with the grey share: the occluded patch gains weight, the opposite of the claim.
  opposed = lambda x: dict(grey_sensitive_model(x), w_local=1 - grey_sensitive_model(x)['w_local'])
  assert 'is refuted' in analysis.occlusion_verdict(
      analysis.occlusion_analysis(opposed, images, np.zeros(5, int), BOXES))
  noisy = analysis.occlude(images, BOXES[4], 'noise')
  outside = np.ones((14, 14), bool)
  outside[4:10, 4:10] = False
  assert np.array_equal(noisy[:, outside], images[:, outside])
  assert not np.array_equal(noisy[:, 4:10, 4:10], images[:, 4:10, 4:10])


def test_patches_that_only_touch_are_not_neighbours():
  """neighbour_drop averages over the patches whose pixels the occluded patch's box covers.
  Patches of a grid without overlap only share edges: none is a neighbour, all are far."""
  boxes = [(0, 0, 4, 4), (0, 4, 4, 8), (4, 0, 8, 4), (4, 4, 8, 8)]  # 2×2 patches of 4 px

  def model(images):
    grey = np.all(images == analysis.GREY, axis=-1)
    w_local = np.stack([1 - grey[:, t:b, l:r].mean((1, 2)) for t, l, b, r in boxes], axis=1)
    return dict(prediction=np.zeros(len(images), int), w_local=w_local)
  images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
  images[images == analysis.GREY] = 127
  r = analysis.occlusion_analysis(model, images, np.zeros(3, int), boxes)
  assert r['own_drop'] == pytest.approx([1.0] * 4)
  assert r['neighbour_drop'] == [None] * 4
  assert r['far_drop'] == pytest.approx([0.0] * 4)


def test_analysis_refuses_what_it_cannot_measure(tmp_path):
  write_run(str(tmp_path), 'raf', 80.0)
  with pytest.raises(ConfigError, match="crucial needs synthetic faces.*'raf'"):
    analysis.analyze(str(tmp_path), ['crucial'])
  with pytest.raises(ConfigError, match='gradcam unknown'):
    analysis.analyze(str(tmp_path), ['attention', 'gradcam'])


def test_analysis_runs_on_a_trained_checkpoint(swept):
  runs, _, _ = swept
  workdir = os.path.join(runs, 'ablation', 'attention_both')
  proc = run_module('lnl_jax.analysis', f'--workdir={workdir}', '--num_images=4', '--grid=4')
  out = os.path.join(workdir, 'analysis')
  for name in ('global_weights_grid', 'occlusion', 'crucial_per_class', 'crucial_over_training',
               'confusion_matrix'):
    assert os.path.getsize(os.path.join(out, name + '.png')) > 1000
  occlusion = load(os.path.join(out, 'occlusion.json'))
  assert occlusion['boxes'] == [list(b) for b in patch_geometry(64, 16, 8).boxes()]
  assert occlusion['num_images'] == 4 and len(occlusion['own_drop']) == 16
  assert all(0 <= a <= 100 for a in occlusion['accuracy'])
  crucial = load(os.path.join(out, 'crucial.json'))
  flags = synthetic.generate(32, image_size=64, seed=0, num_patches=16, overlap=8).crucial[16:]
  k = flags.sum(1)
  kept = (k > 0) & (k < 16)
  assert crucial['num_faces'] == kept.sum() and crucial['faces_left_out'] == 16 - kept.sum()
  assert crucial['uniform'] == pytest.approx(np.mean(k[kept] / 16))
  assert 0 <= crucial['mass'] <= 1
  assert [s['step'] for s in crucial['over_training']] == [2]  # tracked every 2 steps, 2 in all
  assert crucial['verdict'] in proc.stdout and occlusion['verdict'] in proc.stdout
  assert np.sum(load(os.path.join(out, 'per_class.json'))['confusion_matrix']) == 16
  # The long parts show their progress: a pass per occluded patch, the test split's batches.
  assert re.search(r'occluding patches: +\d+%\|.*?\| \d+/16 ', proc.stderr), proc.stderr[-2000:]
  assert 'evaluating:' in proc.stderr
