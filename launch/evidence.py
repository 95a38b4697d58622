"""The evidence behind the README's figures: Table IV and the paper's two attention claims, measured
on synthetic faces over several seeds, each run leaving small records in the repository.

  python -m launch.evidence                          # every unfinished run, then the aggregate
  python -m launch.evidence --only=attention_both_seed0,occluded_both_seed0 --commit
  python -m launch.evidence --print_only             # each run's state and its command
  python -m launch.evidence --aggregate              # RESULTS/evidence.json and README's block
  python -m launch.evidence --readme                 # README's block from RESULTS/evidence.json
      [--runs_dir=runs/evidence] [--results_dir=docs/results] [--readme_path=README.md]

Runs, on `--config` (default `configs/evidence.py`) with the same `--seeds` for every kind:
  attention_<v>_seed<s>   Table IV: model.attention = v ∈ none, local, nonlocal, both
                          (Model-S, Model-Local, Model-NonLocal, LNLAttenNet)
  occluded_both_seed<s>   LNLAttenNet trained on faces with a random occluder (a hand or a box) with
                          probability `--occlusion_prob` = 0.3: enough occluded faces to learn from,
                          while most faces still show all three parts (0 leaves these runs out)

Each run trains in RUNS/<run> (`launch.sweep`'s machinery: a trained workdir is not retrained, a
half-trained one resumes from its newest checkpoint), is analysed, and its records are written to
RESULTS/<run>/: config.json, metrics.jsonl and summary.json of the workdir, and
  crucial.json    `analysis.crucial_mass` of wᵍ on `--crucial_faces` clean test faces (all of
                  them by default; fewer are taken from the classes in turn), with their
                  accuracy (`accuracy`)
  occlusion.json  `analysis.occlusion_analysis` (grey box over each patch in turn) on the first
                  `--occlusion_faces` of them, with `clean_accuracy` (the crucial faces) and
                  `occluders_accuracy`: the same faces, each with a random occluder
  run.json        how the record was made: the commit the running code was checked out at and
                  the changes to lnl_jax/, launch/ and configs/ when the command started
                  (`code_version`), `usable_cores`, and `wall_s`, the seconds of training and
                  analyses, with `from_scratch` false when the workdir held a checkpoint already
                  (then `wall_s` is not the run's whole time)
Every model is analysed on the same faces for a seed: the clean test faces of that seed (the
synthetic faces draw the occluder whether they show it or not, so the occlusion-trained model's test
faces are these faces, the share `--occlusion_prob` of them occluded). A run whose records are
complete is skipped.
Records are written to RESULTS/<run>.partial and renamed, so a record folder is whole or absent.

After every run, and with `--aggregate`, RESULTS/evidence.json is rebuilt from the records
(launch/evidence_report.py): per kind of run, mean ± std over seeds and a 95 % t-interval of (a) the last epoch's
and the mean-of-last-10-epochs test accuracy, with Table IV's ordering S < Local < NonLocal <
LNLAttenNet checked pair by pair; (b) wᵍ on the crucial patches; (c) wˡ of occluded patches and the
accuracy with and without occlusion. A claim holds for a model when the t-interval of its
effect (normalised excess of wᵍ; own fall of wˡ − the others') lies above 0 and its size (the raw
excess; the own fall) reaches the analysis module's smallest one that counts (MIN_EXCESS_MASS,
MIN_OWN_DROP); it is refuted when the interval lies below 0 and not shown otherwise; with one seed
it is undecided, and a model at chance in any seed (its last test accuracy no better than always
answering the most common test class) decides neither claim. Table IV's pairs are compared on the
seeds both models have, by the t-interval of the paired differences. README.md's evidence block is
then rendered from evidence.json; tests/test_evidence.py checks that both are what the committed
records give. `--commit` commits the run's records, evidence.json and README.md after
each run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import app, flags, logging

from launch import runs as runs_lib
from launch.evidence_report import (DEFAULT_CONFIG, EVIDENCE_JSON, RUN_FILE, TABLE_IV_ORDER,
                                    WORKDIR_FILES, is_recorded, write_evidence, write_readme)
from lnl_jax import analysis, checkpoints, cli, host, inference, io
from lnl_jax.config_base import ATTENTION_VARIANTS
from lnl_jax.data import datasets
from lnl_jax.errors import ConfigError

DEFAULT_RUNS_DIR = 'runs/evidence'
# The fields every run sets: a --config flag on one of them would be overwritten.
RUN_FIELDS = ('seed', 'model.attention', 'data.occlusion_prob')


# --- the runs -------------------------------------------------------------------------------------

def runs(seeds: Sequence[int], variants: Sequence[str] = TABLE_IV_ORDER,
         occlusion_prob: float = 0.3) -> list[runs_lib.Member]:
  """The evidence runs: Table IV's `variants`, then the occlusion-trained LNLAttenNet, per seed."""
  for v in variants:
    if v not in ATTENTION_VARIANTS:
      raise ConfigError(f'--variants: {v!r} is not one of {", ".join(ATTENTION_VARIANTS)}.')
  if not 0 <= occlusion_prob <= 1:
    raise ConfigError(f'--occlusion_prob={occlusion_prob} must be a probability.')
  out = [runs_lib.Member(f'attention_{v}_seed{s}',
                      {'model.attention': v, 'seed': s, 'data.occlusion_prob': 0.0})
         for v in TABLE_IV_ORDER if v in variants for s in seeds]
  if occlusion_prob > 0:
    out += [runs_lib.Member(f'occluded_both_seed{s}', {'model.attention': 'both', 'seed': s,
                                                    'data.occlusion_prob': occlusion_prob})
            for s in seeds]
  return out


def select(planned: list[runs_lib.Member], only: Sequence[str] | None) -> list[runs_lib.Member]:
  """The runs named in `only` (all when empty), in the planned order."""
  if not only:
    return planned
  names = [m.name for m in planned]
  unknown = [n for n in only if n not in names]
  if unknown:
    raise ConfigError(f'--only: {", ".join(unknown)} not among the planned runs: '
                      f'{", ".join(names)}.')
  return [m for m in planned if m.name in only]


# --- analysing one trained run --------------------------------------------------------------------

def analysis_faces(config: ml_collections.ConfigDict, occlusion_prob: float, cache_dir: str | None):
  """The test split `datasets.load_splits` gives `config`, drawn with `occlusion_prob` instead,
  cached in `cache_dir`: every run of a seed shares them."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.occlusion_prob = occlusion_prob
  return datasets.load_splits(data, config.seed, config.model.num_patches, config.model.overlap,
                              cache_dir)[1]


def analyse(workdir: str, crucial_faces: int, occlusion_faces: int,
            cache_dir: str | None = None) -> dict[str, dict]:
  """{file name: content} of the analyses of `workdir`'s newest checkpoint (module docstring)."""
  run = checkpoints.load_trained(workdir, 'latest')
  config = run.config
  if config.data.name != 'synthetic':
    raise ConfigError(f'{workdir} was trained on {config.data.name!r}; the evidence needs '
                      'synthetic faces (they know their crucial patches).')
  batch, size, attention = config.train.batch_size, config.data.image_size, config.model.attention
  apply_fn = inference.Predictor(run.model, run.params, batch)

  clean = analysis_faces(config, 0.0, cache_dir)
  images, labels, index = analysis.load_images(clean, size, batch, crucial_faces or len(clean))
  out = apply_fn(images)
  accuracy = 100.0 * float(np.mean(out['prediction'] == labels))
  crucial = analysis.crucial_mass(out['w_global'], clean.crucial[index], labels, clean.class_names)
  crucial.update(step=run.step, attention=attention, accuracy=accuracy,
                 verdict=analysis.crucial_verdict(crucial, attention, accuracy=accuracy,
                                                  labels=labels))

  occluded = analysis_faces(config, 1.0, cache_dir)
  o_images, o_labels, _ = analysis.load_images(occluded, size, batch, len(images))
  occluders_accuracy = 100.0 * float(np.mean(apply_fn(o_images)['prediction'] == o_labels))
  n = occlusion_faces or len(images)
  occlusion = analysis.occlusion_analysis(apply_fn, images[:n], labels[:n],
                                          run.model.geometry.boxes(), fill='grey', seed=config.seed)
  occlusion.update(step=run.step, attention=attention, clean_accuracy=accuracy,
                   clean_faces=len(images), occluders_accuracy=occluders_accuracy,
                   verdict=analysis.occlusion_verdict(occlusion, attention,
                                                      labels=labels[:n]))
  return {'crucial.json': crucial, 'occlusion.json': occlusion}


CODE_DIRS = ('lnl_jax', 'launch', 'configs')


def code_version(root: str) -> dict:
  """{'commit': HEAD of the checkout at `root` (None outside git), 'modified': the files of
  lnl_jax/, launch/ and configs/ that differ from it or are untracked, 'diff': `git diff HEAD` of
  the tracked ones, then each untracked one as a new file}: enough to rebuild the code that made a
  record from the commit."""
  git = lambda *a: subprocess.run(['git', *a], cwd=root, capture_output=True, text=True,
                                  check=True).stdout
  try:
    commit = git('rev-parse', 'HEAD').strip()
    status = git('status', '--porcelain', '--untracked-files=all', '--', *CODE_DIRS)
    diff = git('diff', 'HEAD', '--', *CODE_DIRS)
  except (OSError, subprocess.CalledProcessError):
    return dict(commit=None, modified=[], diff='')
  for line in status.splitlines():
    if line.startswith('??'):  # exits 1 when the files differ, which they do
      diff += subprocess.run(['git', 'diff', '--no-index', '--', os.devnull, line[3:]], cwd=root,
                             capture_output=True, text=True).stdout
  return dict(commit=commit, modified=sorted(line[3:] for line in status.splitlines()), diff=diff)


def record(workdir: str, results_dir: str, name: str, analyses: dict[str, dict]) -> str:
  """Writes RESULTS/<name>/ (the workdir's small files and `analyses`) whole, or not at all."""
  final = os.path.join(results_dir, name)
  partial = final + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  for f in WORKDIR_FILES:
    shutil.copyfile(os.path.join(workdir, f), os.path.join(partial, f))
  for f, content in analyses.items():
    io.write_json(os.path.join(partial, f), content)
  shutil.rmtree(final, ignore_errors=True)
  os.replace(partial, final)
  return final


def run_one(config, member: runs_lib.Member, runs_dir: str, results_dir: str, crucial_faces: int,
            occlusion_faces: int, code: dict, data_cache: str | None = None) -> str:
  """Trains (or resumes, or skips the training of) one run, analyses it and writes its records
  (`code`: `code_version`'s, for run.json); the synthetic faces of both are kept in
  `data_cache`."""
  workdir = os.path.join(runs_dir, member.name)
  start, from_scratch = time.perf_counter(), not checkpoints.has_checkpoint(workdir)
  runs_lib.run_members(config, runs_dir, [member], data_cache)
  logging.info('%s: analysing', member.name)
  analyses = analyse(workdir, crucial_faces, occlusion_faces, data_cache)
  with open(os.path.join(workdir, 'summary.json')) as f:
    steps = json.load(f)['steps']
  if analyses['crucial.json']['step'] != steps:
    raise ConfigError(f'{workdir}: the newest checkpoint is at step '
                      f'{analyses["crucial.json"]["step"]}, summary.json at {steps}.')
  made = dict(code, usable_cores=host.usable_cores(), wall_s=round(time.perf_counter() - start, 1),
              from_scratch=from_scratch)
  return record(workdir, results_dir, member.name, {**analyses, RUN_FILE: made})


def git_commit(paths: Sequence[str], message: str) -> None:
  """`git add` and commit exactly `paths` (other staged or modified files are left alone)."""
  cwd = os.path.dirname(os.path.abspath(paths[0]))
  paths = [os.path.abspath(p) for p in paths]
  subprocess.run(['git', 'add', '--', *paths], cwd=cwd, check=True)
  subprocess.run(['git', 'commit', '-q', '-m', message, '--', *paths], cwd=cwd, check=True)


# --- command line ---------------------------------------------------------------------------------

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_config_flag()
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of every kind of run.')
flags.DEFINE_list('variants', list(TABLE_IV_ORDER), 'Table IV variants (model.attention).')
flags.DEFINE_float('occlusion_prob', 0.3, 'data.occlusion_prob of the occlusion-trained '
                   'LNLAttenNet runs (0: no such runs).')
flags.DEFINE_list('only', None, 'Run only these runs (names as --print_only lists them).')
cli.define_once(flags.DEFINE_string, 'runs_dir', None, 'Workdirs: RUNS/<run> (checkpoints; not '
                f'committed). Default {DEFAULT_RUNS_DIR}.')
flags.DEFINE_string('results_dir', 'docs/results', 'Records: RESULTS/<run>/ and evidence.json.')
flags.DEFINE_string('readme_path', 'README.md', 'README whose evidence block is rendered '
                    '("" = none).')
flags.DEFINE_integer('crucial_faces', 700, 'Clean test faces for wᵍ and accuracy (0 = all).')
flags.DEFINE_integer('occlusion_faces', 200, 'Of those, faces occluded patch by patch (0 = all).')
cli.define_once(flags.DEFINE_bool, 'print_only', False,
                'Print each run\'s state and command; run nothing.')
flags.DEFINE_bool('aggregate', False, 'Only rebuild evidence.json and the README block.')
flags.DEFINE_bool('readme', False, 'Only render the README block from evidence.json.')
flags.DEFINE_bool('commit', False, 'git commit each run\'s records (and evidence.json, README).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config_flag = FLAGS['config']
  config_arg = config_flag.config_filename
  overrides = dict(config_flag.override_values)
  try:
    clash = sorted(set(overrides) & set(RUN_FIELDS))
    if clash:
      raise ConfigError(f'--config.{clash[0]} is set on the command line, but every evidence run '
                        'sets it; drop the flag (--seeds, --variants, --occlusion_prob set it).')
    if FLAGS.config.data.name != 'synthetic':
      raise ConfigError(f'--config={config_arg} is not synthetic faces; the evidence needs them.')
    planned = runs([int(s) for s in FLAGS.seeds], FLAGS.variants, FLAGS.occlusion_prob)
    chosen = select(planned, FLAGS.only)
    runs_lib.check_members(FLAGS.config, chosen)
  except (ConfigError, ValueError) as e:
    cli.fail(str(e))
  results, readme = FLAGS.results_dir, FLAGS.readme_path or None
  runs_dir = FLAGS.runs_dir or DEFAULT_RUNS_DIR
  names = [m.name for m in planned]
  settings = dict(config=config_arg, overrides={k: overrides[k] for k in sorted(overrides)},
                  seeds=[int(s) for s in FLAGS.seeds], occlusion_prob=FLAGS.occlusion_prob,
                  crucial_faces=FLAGS.crucial_faces, occlusion_faces=FLAGS.occlusion_faces)

  if FLAGS.readme:
    with open(os.path.join(results, EVIDENCE_JSON)) as f:
      write_readme(readme or cli.fail('--readme needs --readme_path.'), json.load(f))
    return
  if FLAGS.aggregate:
    write_evidence(results, names, settings, readme)
    return
  if FLAGS.print_only:
    # The flags given here, so that each command plans the same runs and writes the same places.
    extra = [f'--{name}={FLAGS[name].serialize().split("=", 1)[1]}'
             for name in ('seeds', 'variants', 'occlusion_prob', 'runs_dir', 'results_dir',
                          'readme_path', 'crucial_faces', 'occlusion_faces') if FLAGS[name].present]
    todo = [m for m in chosen if not is_recorded(results, m.name)]
    for m in chosen:
      if m not in todo:
        print(f'# {m.name}: recorded ({os.path.join(results, m.name)})', file=sys.stderr)
    for m in todo:
      print(runs_lib.command(config_arg, overrides, f'--only={m.name}', *extra,
                             module='launch.evidence'))
    print(f'# {len(todo)} runs to go', file=sys.stderr)
    return

  cli.setup_process()
  code = code_version(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if code['modified']:
    logging.warning('the code differs from commit %s in %s; run.json says so',
                    code['commit'], ', '.join(code['modified']))

  def run_all():
    for i, m in enumerate(chosen):
      if is_recorded(results, m.name):
        logging.info('run %d/%d %s: recorded already (%s), skipped', i + 1, len(chosen), m.name,
                     os.path.join(results, m.name))
        continue
      logging.info('run %d/%d %s', i + 1, len(chosen), m.name)
      path = run_one(FLAGS.config, m, runs_dir, results, FLAGS.crucial_faces, FLAGS.occlusion_faces,
                     code, cli.data_cache_dir(FLAGS.data_cache))
      write_evidence(results, names, settings, readme)
      if FLAGS.commit:
        git_commit([path, os.path.join(results, EVIDENCE_JSON)] + ([readme] if readme else []),
                   f'evidence: {m.name} recorded')
    write_evidence(results, names, settings, readme)

  cli.run_or_exit(run_all)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', DEFAULT_CONFIG)
  cli.run(main)
