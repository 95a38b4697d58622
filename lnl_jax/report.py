"""Results report: every run under a directory, laid out like the paper's tables, beside its numbers.

  python -m lnl_jax.report runs/raf [--out=runs/raf/report.md]

Collects every workdir (a folder with config.json) under RUNS_DIR. Runs that sit side by side in one
folder and share a dataset form one table; which of the paper's tables it is follows from the config
fields in which they differ: model.attention → Table IV (ablation), model.alpha → Table V,
model.num_patches (and the overlap that follows from it) → Table VI, model.overlap → Table VII,
data.fold → cross-validation, seed → repeated seeds; anything else → a table of the differing fields.
A run alone in its folder goes to the 'Single runs' table. Every table gives ours (the mean test
accuracy of the last `train.mean_of_last` epochs, from summary.json), the paper's number for the same
dataset and setting, and the difference ours − paper in points; sweeps also get a PNG plot (accuracy
against the swept value, with the paper's curve where it is known). The markdown is printed and
written to --out (default RUNS_DIR/report.md), the plots beside it.

The paper's numbers are those of `lnl_jax/paper.py` (Tables IV–VII as printed); a setting the
paper gives no number for is left out, and the table says 'unknown'.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
from absl import app, flags, logging
from matplotlib.figure import Figure

from lnl_jax import checkpoints, cli, metrics, plots as plots_lib
from lnl_jax.paper import (MODEL_NAMES, PAPER_ALPHA, PAPER_IMAGE_SIZE, PAPER_PATCHES, TABLE_IV,
                           TABLE_V, TABLE_V_ALPHAS, TABLE_VI, TABLE_VI_PATCHES, TABLE_VII,
                           TABLE_VII_UNREADABLE, eq5_overlap)

cli.define_once(flags.DEFINE_string, 'out', None, 'Markdown file to write (default '
                'RUNS_DIR/report.md); the plots go beside it.')

DATASET_NAMES = {'raf': 'RAF-DB', 'affectnet': 'AffectNet', 'sfew': 'SFEW 2.0', 'ckplus': 'CK+',
                 'mmi': 'MMI'}
SWEEP_TITLES = {
    'ablation': 'Table IV: ablation of the two attentions',
    'alpha': 'Table V: α of Eq. (1)',
    'patches': 'Table VI: number of patches M',
    'overlap': 'Table VII: overlap between neighbouring patches',
}


# --- the paper's numbers beside a run ---------------------------------------------------------------

def overlap_at_144(overlap: float, image_size: int) -> float:
  return overlap * PAPER_IMAGE_SIZE / image_size


def paper_overlap(dataset: str, overlap: int, image_size: int) -> float | None:
  """Table VII's number for an overlap of `overlap` px at `image_size` px, scaled to 144 px.

  At another image size the sweep rounds 144-px overlaps to whole pixels, so a value matches the
  nearest column within that rounding (half a pixel, times 144 / image_size).
  """
  table = TABLE_VII.get(dataset, {})
  x = overlap_at_144(overlap, image_size)
  tolerance = 0.5 * PAPER_IMAGE_SIZE / image_size + 1e-9
  near = [k for k in table if abs(k - x) <= tolerance]
  return table[min(near, key=lambda k: abs(k - x))] if near else None


def paper_value(sweep: str, dataset: str, value, image_size: int = PAPER_IMAGE_SIZE) -> float | None:
  """The paper's accuracy for one member of `sweep` ('ablation', 'alpha', 'patches', 'overlap')."""
  if sweep == 'ablation':
    return TABLE_IV.get(value, {}).get(dataset)
  if sweep == 'alpha':
    row = TABLE_V.get(dataset)
    hits = [i for i, a in enumerate(TABLE_V_ALPHAS) if abs(a - float(value)) < 1e-6]
    return row[hits[0]] if row and hits else None
  if sweep == 'patches':
    row = TABLE_VI.get(dataset)
    return row[TABLE_VI_PATCHES.index(value)] if row and value in TABLE_VI_PATCHES else None
  if sweep == 'overlap':
    return paper_overlap(dataset, value, image_size)
  raise ValueError(f'unknown sweep {sweep!r}')


def deviations(config: dict) -> dict:
  """The paper's swept settings in which `config` differs from the paper's LNLAttenNet."""
  model, size = config['model'], config['data']['image_size']
  out = {}
  if model['attention'] != 'both':
    out['ablation'] = model['attention']
  if abs(model['alpha'] - PAPER_ALPHA) > 1e-6:
    out['alpha'] = model['alpha']
  if model['num_patches'] != PAPER_PATCHES:
    out['patches'] = model['num_patches']
  if abs(model['overlap'] - eq5_overlap(size, model['num_patches'])) > 0.5 + 1e-9:
    out['overlap'] = model['overlap']
  return out


def paper_accuracy(config: dict) -> float | None:
  """The paper's number for the setting of `config` (a config.json dict), if it reports one.

  The paper's LNLAttenNet gives the dataset's headline number; a config that differs in exactly one
  swept setting gives that table's number; anything else has no counterpart in the paper.
  """
  dataset = config['data']['name']
  diff = deviations(config)
  if not diff:
    return TABLE_IV['both'].get(dataset)
  if len(diff) == 1:
    (sweep, value), = diff.items()
    return paper_value(sweep, dataset, value, config['data']['image_size'])
  return None


# --- runs -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
  workdir: str  # relative to the runs directory
  config: dict  # config.json
  summary: dict | None  # summary.json; None while the run is unfinished

  @property
  def accuracy(self) -> float | None:
    return self.summary and self.summary.get('test_accuracy_mean_last_epochs')

  @property
  def last_epoch(self) -> float | None:
    return self.summary and self.summary.get('test_accuracy_last_epoch')

  @property
  def dataset(self) -> str:
    return self.config['data']['name']

  @property
  def image_size(self) -> int:
    return self.config['data']['image_size']


SKIP_DIRS = {'checkpoints', 'plots', 'analysis'}


def collect(runs_dir: str) -> list[Run]:
  """Every workdir (a folder with config.json) under `runs_dir`, sorted by path."""
  runs = []
  for path, dirs, files in os.walk(runs_dir):
    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
    if 'config.json' not in files:
      if 'summary.json' in files:
        logging.warning('%s has summary.json but no config.json; left out.', path)
      continue
    config = checkpoints.load_config(path).to_dict()  # today's defaults under the saved fields
    summary = None
    if 'summary.json' in files:
      with open(os.path.join(path, 'summary.json')) as f:
        summary = json.load(f)
    runs.append(Run(os.path.relpath(path, runs_dir), config, summary))
  return sorted(runs, key=lambda r: r.workdir)


def flatten(config: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in config.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = tuple(v) if isinstance(v, list) else v
  return out


IGNORED_FIELDS = {'name'}  # the config's label, e.g. 'raf:cpu,none', not a setting


def differing_fields(runs: list[Run]) -> list[str]:
  flat = [flatten(r.config) for r in runs]
  keys = sorted(set().union(*flat) - IGNORED_FIELDS)
  return [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]


def classify(fields: list[str]) -> str:
  """Which table a group of runs differing in `fields` is."""
  f = set(fields)
  if f == {'model.attention'}:
    return 'ablation'
  if f == {'model.alpha'}:
    return 'alpha'
  if 'model.num_patches' in f and f <= {'model.num_patches', 'model.overlap'}:
    return 'patches'
  if f == {'model.overlap'}:
    return 'overlap'
  if f == {'data.fold'}:
    return 'folds'
  if f == {'seed'}:
    return 'seeds'
  return 'other'


def group(runs: list[Run]) -> tuple[list[list[Run]], list[Run]]:
  """(groups of ≥ 2 runs sharing a folder and a dataset, the runs alone in theirs)."""
  by_key = {}
  for r in runs:
    by_key.setdefault((os.path.dirname(r.workdir), r.dataset), []).append(r)
  groups = [g for g in by_key.values() if len(g) > 1]
  singles = [g[0] for g in by_key.values() if len(g) == 1]
  return groups, singles


# --- markdown -------------------------------------------------------------------------------------

def fmt_paper(x: float | None) -> str:
  return 'unknown' if x is None else f'{x:.2f}'


def fmt_diff(ours: float | None, paper: float | None) -> str:
  return '—' if ours is None or paper is None else f'{ours - paper:+.2f}'


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def fmt_ours(x: float | None) -> str:
  return '—' if x is None else f'{x:.2f}'  # — : not finished


def _ours_cell(runs: list[Run]) -> tuple[float | None, str]:
  ours = _mean(r.accuracy for r in runs)
  done = [r for r in runs if r.accuracy is not None]
  return ours, fmt_ours(ours) + (f' (mean of {len(done)} runs)' if len(done) > 1 else '')


def _value(run: Run, field: str):
  node = run.config
  for key in field.split('.'):
    node = node[key]
  return node


def sweep_rows(kind: str, runs: list[Run]) -> tuple[list[str], list[list[str]], list[tuple]]:
  """(header, rows, plot points (x, ours, paper)) of a sweep table; a value's runs are averaged."""
  dataset, size = runs[0].dataset, runs[0].image_size
  field = {'ablation': 'model.attention', 'alpha': 'model.alpha', 'patches': 'model.num_patches',
           'overlap': 'model.overlap'}[kind]
  by_value = {}
  for r in runs:
    by_value.setdefault(_value(r, field), []).append(r)
  if kind == 'ablation':
    order = [a for a in MODEL_NAMES if a in by_value]
  else:
    order = sorted(by_value)
  header = {'ablation': ['Model', 'model.attention'], 'alpha': ['α'],
            'patches': ['M', 'overlap (px)'], 'overlap': ['overlap (px)', 'at 144 px']}[kind]
  header = header + ['ours (%)', 'paper (%)', 'Δ']
  rows, points = [], []
  for value in order:
    members = by_value[value]
    ours, ours_text = _ours_cell(members)
    paper = paper_value(kind, dataset, value, size)
    if kind == 'ablation':
      label = [MODEL_NAMES[value], value]
    elif kind == 'alpha':
      label = [f'{value:g}']
    elif kind == 'patches':
      label = [str(value), ', '.join(sorted({str(r.config['model']['overlap']) for r in members}))]
    else:
      label = [str(value), f'{overlap_at_144(value, size):.3g}']
    rows.append(label + [ours_text, fmt_paper(paper), fmt_diff(ours, paper)])
    x = overlap_at_144(value, size) if kind == 'overlap' else value
    points.append((x, ours, paper))
  return header, rows, points


def repeat_rows(kind: str, runs: list[Run]) -> tuple[list[str], list[list[str]], str]:
  """Folds or seeds: a row each, then mean ± std (ddof = 1); and the line comparing with the paper."""
  field = 'data.fold' if kind == 'folds' else 'seed'
  runs = sorted(runs, key=lambda r: _value(r, field))
  header = ['fold' if kind == 'folds' else 'seed', 'ours: mean of last epochs (%)',
            'last epoch (%)']
  rows = [[str(_value(r, field)), fmt_ours(r.accuracy), fmt_ours(r.last_epoch)] for r in runs]
  cells = []
  for key in ('accuracy', 'last_epoch'):
    values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
    cells.append('{:.2f} ± {:.2f}'.format(*metrics.mean_std(values)) if values else '—')
  rows.append(['mean ± std'] + cells)
  mean = _mean(r.accuracy for r in runs)
  paper = paper_accuracy(runs[0].config)
  protocol = f'{len(runs)}-fold cross-validation' if kind == 'folds' else f'{len(runs)} seeds'
  line = (f'Paper: {fmt_paper(paper)}%; ours ({protocol}, mean): {fmt_ours(mean)}%; '
          f'Δ = {fmt_diff(mean, paper)}. std: sample standard deviation (ddof = 1).')
  return header, rows, line


def other_rows(fields: list[str], runs: list[Run]) -> tuple[list[str], list[list[str]]]:
  header = ['run'] + fields + ['ours (%)', 'paper (%)', 'Δ']
  rows = []
  for r in runs:
    flat = flatten(r.config)
    paper = paper_accuracy(r.config)
    rows.append([os.path.basename(r.workdir)] + [str(flat.get(f)) for f in fields]
                + [fmt_ours(r.accuracy), fmt_paper(paper), fmt_diff(r.accuracy, paper)])
  return header, rows


def setting(config: dict) -> str:
  m, d = config['model'], config['data']
  return (f'{m["attention"]}, α={m["alpha"]:g}, M={m["num_patches"]}, overlap={m["overlap"]} px, '
          f'{d["image_size"]} px')


def singles_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
  header = ['run', 'dataset', 'setting', 'ours (%)', 'paper (%)', 'Δ']
  rows = []
  for r in runs:
    paper = paper_accuracy(r.config)
    rows.append([r.workdir, DATASET_NAMES.get(r.dataset, r.dataset), setting(r.config),
                 fmt_ours(r.accuracy), fmt_paper(paper), fmt_diff(r.accuracy, paper)])
  return header, rows


def _epochs_note(runs: list[Run]) -> str:
  done = [r.summary for r in runs if r.summary]
  if not done:
    return 'No run has finished yet.'
  last = sorted({s['mean_over_epochs'] for s in done})
  epochs = sorted({s['epochs'] for s in done})
  seeds = sorted({r.config['seed'] for r in runs})
  return (f'ours: mean test accuracy of the last {"/".join(map(str, last))} of '
          f'{"/".join(map(str, epochs))} epochs (the paper: last 10 of 24); '
          f'seed{"s" if len(seeds) > 1 else ""} {", ".join(map(str, seeds))}.')


def _notes(kind: str, runs: list[Run]) -> list[str]:
  notes = [_epochs_note(runs)]
  unfinished = [r.workdir for r in runs if r.summary is None]
  if unfinished:
    notes.append('Unfinished (no summary.json yet): ' + ', '.join(unfinished) + '.')
  dataset = runs[0].dataset
  sizes = {(r.config['model']['width'], r.image_size) for r in runs}
  reduced = sorted(sizes - {(1.0, PAPER_IMAGE_SIZE)})
  if reduced and dataset in DATASET_NAMES:
    notes.append('Smaller than the paper\'s network (' + '; '.join(
        f'width ×{w:g} at {s} px' for w, s in reduced) + '): the paper\'s numbers are for width ×1 '
        f'at {PAPER_IMAGE_SIZE} px.')
  if kind == 'alpha' and dataset in TABLE_V:
    notes.append('The paper\'s Table V has its headline number at α = 0.3 on every dataset, although '
                 'its text says α = 0.7 was used.')
  if kind == 'patches':
    notes.append('Overlap per M from Eq. (5) with γ = 1/3: S / (2n + 1) px.')
  if kind == 'overlap' and dataset in TABLE_VII:
    notes.append(f'The paper\'s Table VII has two more columns, {TABLE_VII_UNREADABLE[0]:.2f} and '
                 f'{TABLE_VII_UNREADABLE[1]:.2f}, at overlaps its text does not make readable.')
  if kind in SWEEP_TITLES and dataset not in DATASET_NAMES:
    notes.append(f'The paper reports no {dataset!r} results.')
  return notes


# --- plots ----------------------------------------------------------------------------------------

def plot_sweep(kind: str, points: list[tuple], title: str, path: str) -> str:
  """Ours against the swept value, with the paper's curve where it is known; bars for the ablation."""
  fig = Figure(figsize=(6, 4), layout='constrained')
  ax = fig.add_subplot()
  x = [p[0] for p in points]
  ours = np.array([np.nan if p[1] is None else p[1] for p in points], np.float64)
  paper = np.array([np.nan if p[2] is None else p[2] for p in points], np.float64)
  if kind == 'ablation':
    pos = np.arange(len(x))
    ax.bar(pos - 0.2, ours, width=0.4, color='C0', label='ours')
    ax.bar(pos + 0.2, paper, width=0.4, color='C1', label='paper')
    ax.set_xticks(pos, [MODEL_NAMES[v] for v in x])
    finite = np.concatenate([ours[np.isfinite(ours)], paper[np.isfinite(paper)]])
    if finite.size:
      ax.set_ylim(max(0.0, finite.min() - 5), min(100.0, finite.max() + 3))
  else:
    done = np.isfinite(ours)  # unfinished members leave no gap in the line
    ax.plot(np.asarray(x)[done], ours[done], marker='o', color='C0', label='ours')
    known = np.isfinite(paper)
    if known.any():
      ax.plot(np.asarray(x)[known], paper[known], marker='s', linestyle='--', color='C1',
              label='paper')
    ax.set_xlabel({'alpha': 'α', 'patches': 'M (patches)', 'overlap': 'overlap (px at 144 px)'}[kind])
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title, fontsize=9)
  ax.legend()
  return plots_lib.save(fig, path)


# --- the report -----------------------------------------------------------------------------------

def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9]+', '_', text).strip('_') or 'runs'


def build_report(runs_dir: str, out: str | None = None, plots: bool = True) -> str:
  """The markdown report of every run under `runs_dir`; plots go beside `out` (if given)."""
  runs = collect(runs_dir)
  lines = [f'# Results under `{runs_dir}`', '',
           'ours: the mean test accuracy of the last `train.mean_of_last` epochs (summary.json); '
           'paper: the paper\'s number for the same dataset and setting; Δ = ours − paper, in '
           'points.']
  if not runs:
    return '\n'.join(lines + ['', 'No runs found (no config.json under this directory).']) + '\n'
  groups, singles = group(runs)
  for runs_in_group in groups:
    fields = differing_fields(runs_in_group)
    kind = classify(fields)
    folder = os.path.dirname(runs_in_group[0].workdir) or '.'
    dataset = runs_in_group[0].dataset
    name = DATASET_NAMES.get(dataset, dataset)
    lines += ['']
    if kind in SWEEP_TITLES:
      title = f'{SWEEP_TITLES[kind]} — {name}'
      header, rows, points = sweep_rows(kind, runs_in_group)
      lines += [f'## {title} (`{folder}/`)', '', markdown_table(header, rows), '']
      lines += _notes(kind, runs_in_group)
      if plots and out and any(p[1] is not None for p in points):
        stem = _slug(os.path.splitext(os.path.basename(out))[0])
        path = os.path.join(os.path.dirname(os.path.abspath(out)),
                            f'{stem}_{_slug(folder)}_{kind}.png')
        plot_sweep(kind, points, title, path)
        lines += ['', f'![{title}]({os.path.basename(path)})']
    elif kind in ('folds', 'seeds'):
      header, rows, line = repeat_rows(kind, runs_in_group)
      what = 'Cross-validation' if kind == 'folds' else 'Repeated seeds'
      lines += [f'## {what} — {name} (`{folder}/`)', '', markdown_table(header, rows), '', line]
      lines += _notes(kind, runs_in_group)
    else:
      header, rows = other_rows(fields, runs_in_group)
      lines += [f'## Runs differing in {", ".join(fields) or "nothing"} — {name} (`{folder}/`)', '',
                markdown_table(header, rows), '']
      lines += _notes(kind, runs_in_group)
  if singles:
    header, rows = singles_rows(singles)
    lines += ['', '## Single runs', '', markdown_table(header, rows), '', _epochs_note(singles)]
    if any(r.config['model']['width'] != 1.0 or r.image_size != PAPER_IMAGE_SIZE for r in singles):
      lines.append(f'Runs at a width below ×1 or another size than {PAPER_IMAGE_SIZE} px are smaller '
                   'than the paper\'s network; its numbers are for the full size.')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m lnl_jax.report RUNS_DIR [--out=report.md]')
  runs_dir = argv[1]
  if not os.path.isdir(runs_dir):
    cli.fail(f'{runs_dir} is not a directory; give the --runs_dir of a sweep or a workdir.')
  out = flags.FLAGS.out or os.path.join(runs_dir, 'report.md')
  text = build_report(runs_dir, out)
  with open(out, 'w') as f:
    f.write(text)
  print(text)
  logging.info('report written to %s', out)


if __name__ == '__main__':
  cli.run(main)
