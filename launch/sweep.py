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
config's seed (recorded in the member's config.json). A member whose summary.json shows the
config's schedule done (`train.num_epochs` epochs, or `train.max_steps` steps where set) is skipped;
a half-trained one, or one a smaller `max_steps` ended early, resumes from its newest checkpoint.
`--print_only` prints one `lnl_jax.main` command per unfinished member instead (for a cluster);
`--members=0,2` keeps some members, `--values=0.3,0.7` replaces the swept values (as given; px at
the config's image size for overlap).
Every other `--config.x=y` flag applies to every member. On k-fold datasets (CK+, MMI) a member
trains fold `data.fold` only; the paper's figures there are 5-fold means (launch.cross_validate).
`python -m lnl_jax.report runs_dir` then lays the results out like the paper's tables.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags, logging

from launch.runs import Member, check_members, print_commands, run_members
from lnl_jax import cli
from lnl_jax.errors import ConfigError
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

FLAGS = flags.FLAGS
cli.uses_cache_flags()
cli.define_config_flag()
flags.DEFINE_enum('sweep', None, list(SWEPT_FIELDS), 'Which of the paper\'s sweeps.')
cli.define_once(flags.DEFINE_string, 'runs_dir', None, 'Members train in runs_dir/<sweep>/<member>.')
cli.define_once(flags.DEFINE_bool, 'print_only', False,
                'Print one lnl_jax.main command per unfinished member.')
flags.DEFINE_list('members', None, 'Indices of the members to keep (default: all).')
flags.DEFINE_list('values', None, 'Swept values replacing the paper\'s (px for overlap).')


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


def check_overrides(sweep: str, overrides: dict) -> None:
  clash = sorted(set(overrides) & set(SWEPT_FIELDS[sweep]))
  if clash:
    raise ConfigError(f'--config.{clash[0]} is set on the command line, but --sweep={sweep} sets '
                      'it for every member; drop the flag (use --values to choose the swept values).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config_flag = FLAGS['config']
  overrides = dict(config_flag.override_values)
  try:
    check_overrides(FLAGS.sweep, overrides)
    chosen = select(members(FLAGS.sweep, FLAGS.config.data.image_size, FLAGS.values), FLAGS.members)
    check_members(FLAGS.config, chosen)
  except ConfigError as e:
    cli.fail(str(e))
  base_dir = os.path.join(FLAGS.runs_dir, FLAGS.sweep)
  if FLAGS.print_only:
    print_commands(FLAGS.config, config_flag.config_filename, base_dir, chosen, overrides)
    return
  cli.setup_process()
  cli.run_or_exit(run_members, FLAGS.config, base_dir, chosen, cli.data_cache_dir(FLAGS.data_cache))
  logging.info('sweep %s done; lay it out with: python -m lnl_jax.report %s', FLAGS.sweep,
               FLAGS.runs_dir)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'sweep', 'runs_dir'])
  cli.run(main)
