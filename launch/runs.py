"""Runs of a sweep or a cross-validation: each member trained in its own workdir, or printed as
one `lnl_jax.main` command per unfinished member (for a cluster)."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys

import ml_collections
from absl import app, logging

from lnl_jax import train
from lnl_jax.errors import ConfigError
from lnl_jax.models.lnlattennet import validate


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep: its directory name and the config fields it sets."""
  name: str
  overrides: dict


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
  for m in chosen:
    c = member_config(config, m)
    try:
      validate(c.model, c.data.image_size)
    except ConfigError as e:
      raise ConfigError(f'sweep member {m.name}: {e}') from None


def is_done(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether the run in `workdir` trained the steps `config` asks for: `train.num_epochs` epochs of
  the steps per epoch its summary.json records, or `train.max_steps` where that ends it first. A
  run that a smaller `max_steps` ended early is not done (training it again resumes it), nor is
  one whose summary.json predates those records (training it again only rescores it)."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    summary = json.load(f)
  total = config.train.num_epochs * summary.get('steps_per_epoch', float('inf'))
  if config.train.max_steps:
    total = min(total, config.train.max_steps)
  return summary.get('steps', 0) >= total


def run_members(config: ml_collections.ConfigDict, base_dir: str, chosen: list[Member],
                data_cache: str | None = None):
  """Trains the members in turn in `base_dir/<member>`; finished ones are skipped. Synthetic
  faces are kept in `data_cache` (`train.train_and_evaluate`)."""
  for i, m in enumerate(chosen):
    workdir = os.path.join(base_dir, m.name)
    member = member_config(config, m)
    if is_done(workdir, member):
      logging.info('member %d/%d %s: done already (%s/summary.json), skipped', i + 1, len(chosen),
                   m.name, workdir)
      continue
    logging.info('member %d/%d %s: training in %s', i + 1, len(chosen), m.name, workdir)
    try:
      summary = train.train_and_evaluate(member, workdir, data_cache)
    except (ConfigError, FloatingPointError) as e:  # name the member; the rerun resumes it
      raise type(e)(f'sweep member {m.name} ({workdir}): {e}') from e
    logging.info('member %s: mean test accuracy of the last %d epochs %.2f%%', m.name,
                 summary['mean_over_epochs'], summary['test_accuracy_mean_last_epochs'] or 0.0)


def flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ', '.join(flag_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return repr(value) if isinstance(value, float) else str(value)


def command(config_arg: str, overrides: dict, *args: str, module: str = 'lnl_jax.main') -> str:
  """`python -m module --config=... args --config.field=value ...`, shell-quoted."""
  words = ['python', '-m', module, f'--config={config_arg}', *args]
  words += [f'--config.{k}={flag_value(v)}' for k, v in overrides.items()]
  return ' '.join(shlex.quote(w) for w in words)


def print_commands(config: ml_collections.ConfigDict, config_arg: str, base_dir: str,
                   chosen: list[Member], overrides: dict) -> list[str]:
  """Prints (and returns) one command per unfinished member of `config` (given on the command
  line as `config_arg` and `overrides`); finished ones are noted on stderr."""
  lines = []
  for m in chosen:
    workdir = os.path.join(base_dir, m.name)
    if is_done(workdir, member_config(config, m)):
      print(f'# {m.name}: done ({workdir}/summary.json)', file=sys.stderr)
      continue
    lines.append(command(config_arg, {**overrides, **m.overrides}, f'--workdir={workdir}'))
    print(lines[-1])
  return lines


def run_tool(module_and_flags: list[str], overrides: dict, env: dict | None = None,
             checkout: str = '.') -> str:
  """stdout of `python -m module flags --config.field=value...` (`overrides`: the calling command's
  own config overrides, passed on), run in the git checkout `checkout` (its code is imported), in
  `env` (default: this process's environment); a failure ends the calling process with the tool's
  stderr."""
  words = [f'--config.{k}={flag_value(v)}' for k, v in overrides.items()]
  done = subprocess.run([sys.executable, '-m', *module_and_flags, *words], capture_output=True,
                        text=True, env=env, cwd=checkout)
  if done.returncode:
    sys.exit(f'{" ".join(module_and_flags)} failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return done.stdout


def bench_train_step(config: str, batch_size: int, num_steps: int, overrides: dict, *flags: str,
                     env: dict | None = None, checkout: str = '.') -> dict:
  """The `train_step` record of `lnl_jax.bench` for `config` at `batch_size` (`num_steps` timed,
  eval not measured; `flags`: more of the bench's flags), run by `run_tool`."""
  out = run_tool(['lnl_jax.bench', f'--config={config}', f'--batch={batch_size}',
                  f'--steps={num_steps}', '--noeval', *flags], overrides, env, checkout)
  (record,) = [r for r in map(json.loads, out.splitlines()) if r.get('what') == 'train_step']
  return record


def revision(checkout: str = '.') -> str:
  """The short commit id of the git checkout at `checkout`, which a benchmark record names."""
  return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=checkout, check=True,
                        capture_output=True, text=True).stdout.strip()


def checkout_revisions(names: list[str]) -> tuple[list[str], list[str]]:
  """The absolute paths of the git checkouts a `--checkout` flag names (`.` is this one) and their
  revisions; a usage error if it names none, or a folder that is not a git checkout."""
  if not names:
    raise app.UsageError('--checkout names no checkout; `.` is this one.')
  paths, revisions = [os.path.abspath(c) for c in names], []
  for name, path in zip(names, paths):
    try:
      revisions.append(revision(path))
    except (OSError, subprocess.CalledProcessError):  # no such folder, or not a git checkout
      raise app.UsageError(f'--checkout names {name}, which is not a git checkout.') from None
  return paths, revisions


def report(line: dict, out: str) -> None:
  """Prints `line` as one JSON line, and appends it to the file `out` too unless it is ''."""
  text = json.dumps(line)
  print(text, flush=True)
  if out:
    with open(out, 'a') as f:
      f.write(text + '\n')
