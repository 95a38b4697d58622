"""The paper's sweeps (Tables IV–VII): every member trained in turn here, or one command per member.

  python -m launch.sweep --config=configs/raf.py --sweep=ablation --runs_dir=runs/raf
  python -m launch.sweep --config=configs/raf.py:cpu --sweep=alpha --runs_dir=runs/cpu --print_only

  ablation  Table IV: model.attention ∈ none, local, nonlocal, both (Model-S, Model-Local,
            Model-NonLocal, LNLAttenNet)
  alpha     Table V: model.alpha ∈ 0, 0.1, …, 1
  patches   Table VI: model.num_patches ∈ 4, 9, 16, 25, 36, with model.overlap = round(S / (2n + 1))
            (Eq. 5 with γ = 1/3: P = 3S / (2n + 1), overlap = P / 3)
  overlap   Table VII: model.overlap ∈ 8, 12, 16, 20, 22 px at 144 px, scaled by S / 144 at other
            image sizes S (the paper's first two columns have unreadable overlaps; 8 px is a guess)

Member k of sweep X trains in `runs_dir/X/<member>` (e.g. `runs/raf/alpha/alpha_0.3`) with the
config's seed (recorded in the member's config.json). A member whose summary.json exists is skipped;
a half-trained one resumes from its newest checkpoint. `--print_only` prints one `lnl_jax.main`
command per unfinished member instead (for a cluster); `--members=0,2` keeps some members,
`--values=0.3,0.7` replaces the swept values (as given; px at the config's image size for overlap).
Every other `--config.x=y` flag applies to every member. On k-fold datasets (CK+, MMI) a member
trains fold `data.fold` only; the paper's figures there are 5-fold means (launch.cross_validate).
`python -m lnl_jax.report runs_dir` then lays the results out like the paper's tables.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence

import ml_collections
from absl import app, flags, logging

from lnl_jax.geometry import ConfigError
from lnl_jax.paper import (PAPER_IMAGE_SIZE, TABLE_IV, TABLE_V_ALPHAS, TABLE_VI_PATCHES,
                            TABLE_VII_OVERLAPS, eq5_overlap)

ATTENTIONS = tuple(TABLE_IV)  # Table IV's row order
# The config fields each sweep sets: a --config flag on one of them would be overwritten.
SWEPT_FIELDS = {
    'ablation': ('model.attention',),
    'alpha': ('model.alpha',),
    'patches': ('model.num_patches', 'model.overlap'),
    'overlap': ('model.overlap',),
}


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep: its directory name and the config fields it sets."""
  name: str
  overrides: dict


def members(sweep: str, image_size: int, values: Sequence[str] | None = None) -> list[Member]:
  """The members of `sweep` for a config of `image_size` px (`values`: the swept values as text)."""
  if sweep not in SWEPT_FIELDS:
    raise ConfigError(f'--sweep={sweep!r} is not one of {", ".join(SWEPT_FIELDS)}.')
  try:
    if sweep == 'ablation':
      chosen = list(values or ATTENTIONS)
      for v in chosen:
        if v not in ATTENTIONS:
          raise ValueError(f'{v!r} is not one of {", ".join(ATTENTIONS)}')
      return [Member(f'attention_{v}', {'model.attention': v}) for v in chosen]
    if sweep == 'alpha':
      chosen = [float(v) for v in values] if values else TABLE_V_ALPHAS
      return [Member(f'alpha_{v:g}', {'model.alpha': v}) for v in chosen]
    if sweep == 'patches':
      chosen = [int(v) for v in values] if values else TABLE_VI_PATCHES
      return [Member(f'patches_{m}', {'model.num_patches': m,
                                      'model.overlap': round(eq5_overlap(image_size, m))})
              for m in chosen]
    if values:
      chosen = [int(v) for v in values]
    else:
      chosen = [round(o * image_size / PAPER_IMAGE_SIZE) for o in TABLE_VII_OVERLAPS]
    return [Member(f'overlap_{o}', {'model.overlap': o}) for o in chosen]
  except ValueError as e:
    raise ConfigError(f'--values={",".join(values or [])} does not fit --sweep={sweep}: '
                      f'{e}.') from None


def select(all_members: list[Member], indices: Sequence[str] | None) -> list[Member]:
  """The members at `indices` (as given to --members), in that order."""
  if not indices:
    return all_members
  chosen = []
  for text in indices:
    if not text.strip().isdigit() or int(text) >= len(all_members):
      raise ConfigError(f'--members={",".join(indices)}: {text!r} is not a member index; this '
                        f'sweep has {len(all_members)} members, 0..{len(all_members) - 1}: '
                        + ', '.join(m.name for m in all_members))
    chosen.append(all_members[int(text)])
  return chosen


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
  """A copy of `config` with the member's fields set."""
  c = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in member.overrides.items():
    *parents, key = dotted.split('.')
    node = c
    for p in parents:
      node = node[p]
    node[key] = value
  return c


def check_members(config: ml_collections.ConfigDict, chosen: list[Member]) -> None:
  """Raises ConfigError, naming the member, if any member's model cannot be built."""
  from lnl_jax.models.lnlattennet import validate
  for m in chosen:
    c = member_config(config, m)
    try:
      validate(c.model, c.data.image_size)
    except ConfigError as e:
      raise ConfigError(f'sweep member {m.name}: {e}') from None


def check_overrides(sweep: str, overrides: dict) -> None:
  clash = sorted(set(overrides) & set(SWEPT_FIELDS[sweep]))
  if clash:
    raise ConfigError(f'--config.{clash[0]} is set on the command line, but --sweep={sweep} sets '
                      'it for every member; drop the flag (use --values to choose the swept values).')


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'summary.json'))


def run_members(config: ml_collections.ConfigDict, base_dir: str, chosen: list[Member]):
  """Trains the members in turn in `base_dir/<member>`; finished ones are skipped."""
  from lnl_jax import train
  for i, m in enumerate(chosen):
    workdir = os.path.join(base_dir, m.name)
    if is_done(workdir):
      logging.info('member %d/%d %s: done already (%s/summary.json), skipped', i + 1, len(chosen),
                   m.name, workdir)
      continue
    logging.info('member %d/%d %s: training in %s', i + 1, len(chosen), m.name, workdir)
    try:
      summary = train.train_and_evaluate(member_config(config, m), workdir)
    except (ConfigError, FloatingPointError) as e:  # name the member; the rerun resumes it
      raise type(e)(f'sweep member {m.name} ({workdir}): {e}') from e
    logging.info('member %s: mean test accuracy of the last %d epochs %.2f%%', m.name,
                 summary['mean_over_epochs'], summary['test_accuracy_mean_last_epochs'] or 0.0)


def _flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ', '.join(_flag_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return repr(value) if isinstance(value, float) else str(value)


def command(config_arg: str, workdir: str, overrides: dict) -> str:
  """The `lnl_jax.main` command line of one run, shell-quoted."""
  words = ['python', '-m', 'lnl_jax.main', f'--config={config_arg}', f'--workdir={workdir}']
  words += [f'--config.{k}={_flag_value(v)}' for k, v in overrides.items()]
  return ' '.join(shlex.quote(w) for w in words)


def print_commands(config_arg: str, base_dir: str, chosen: list[Member],
                   overrides: dict) -> list[str]:
  """Prints (and returns) one command per unfinished member; finished ones are noted on stderr."""
  lines = []
  for m in chosen:
    workdir = os.path.join(base_dir, m.name)
    if is_done(workdir):
      print(f'# {m.name}: done ({workdir}/summary.json)', file=sys.stderr)
      continue
    lines.append(command(config_arg, workdir, {**overrides, **m.overrides}))
    print(lines[-1])
  return lines


def define_flags() -> None:
  """The command-line flags; defined only when run as a program, so the module imports cleanly."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Experiment config (configs/*.py[:variant]).',
                                  lock_config=True)
  flags.DEFINE_enum('sweep', None, list(SWEPT_FIELDS), 'Which of the paper\'s sweeps.')
  flags.DEFINE_string('runs_dir', None, 'Members train in runs_dir/<sweep>/<member>.')
  flags.DEFINE_bool('print_only', False, 'Print one lnl_jax.main command per unfinished member.')
  flags.DEFINE_list('members', None, 'Indices of the members to keep (default: all).')
  flags.DEFINE_list('values', None, 'Swept values replacing the paper\'s (px for overlap).')
  flags.mark_flags_as_required(['config', 'sweep', 'runs_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  FLAGS = flags.FLAGS
  config_flag = FLAGS['config']
  overrides = dict(config_flag.override_values)
  try:
    check_overrides(FLAGS.sweep, overrides)
    chosen = select(members(FLAGS.sweep, FLAGS.config.data.image_size, FLAGS.values), FLAGS.members)
    check_members(FLAGS.config, chosen)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  base_dir = os.path.join(FLAGS.runs_dir, FLAGS.sweep)
  if FLAGS.print_only:
    print_commands(config_flag.config_filename, base_dir, chosen, overrides)
    return
  from lnl_jax import main as lnl_main  # here: it imports TensorFlow
  lnl_main.setup_process()
  lnl_main.run_or_exit(run_members, FLAGS.config, base_dir, chosen)
  logging.info('sweep %s done; lay it out with: python -m lnl_jax.report %s', FLAGS.sweep,
               FLAGS.runs_dir)


if __name__ == '__main__':
  define_flags()
  app.run(main)
