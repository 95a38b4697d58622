"""cli: how a command ends on errors the user can fix, and where the caches go."""
import os
import signal
import subprocess
import sys

import jax
import pytest
from absl import flags

from fixtures import ROOT
from lnl_jax import cli, main, program_store
from lnl_jax.errors import ConfigError, DataError, Preempted


def raise_(error):
  raise error


@pytest.mark.parametrize('error', [ConfigError('bad field\n  x.y'), DataError('bad file'),
                                   FloatingPointError('nan at step 3')])
def test_user_errors_end_with_one_line_and_status_1(error, capsys):
  with pytest.raises(SystemExit) as e:
    cli.run_or_exit(raise_, error)
  assert e.value.code == 1
  assert capsys.readouterr().err.splitlines() == [f'error: {" ".join(str(error).split())}']


def test_preemption_exits_with_128_plus_the_signal(capsys):
  with pytest.raises(SystemExit) as e:
    cli.run_or_exit(raise_, Preempted('SIGTERM received', int(signal.SIGTERM)))
  assert e.value.code == 143 and 'preempted: SIGTERM' in capsys.readouterr().err
  assert cli.run_or_exit(lambda x: x + 1, 1) == 2
  with pytest.raises(KeyError):  # a bug is not a user error: its traceback stays
    cli.run_or_exit(raise_, KeyError('x'))


def test_compilation_cache_dir(monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert cli.compilation_cache_dir(None) == str(tmp_path / 'lnl_jax' / 'jax_cache')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert cli.compilation_cache_dir(None) == str(tmp_path / 'home' / '.cache' / 'lnl_jax' / 'jax_cache')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/elsewhere')
  assert cli.compilation_cache_dir(None) == '/elsewhere'
  assert cli.compilation_cache_dir('/flag') == '/flag'
  assert cli.compilation_cache_dir('') == ''  # --compilation_cache= turns it off


def test_data_cache_dir(monkeypatch, tmp_path):
  monkeypatch.delenv('LNL_JAX_DATA_CACHE', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert cli.data_cache_dir(None) == str(tmp_path / 'lnl_jax' / 'synthetic_faces')
  monkeypatch.setenv('LNL_JAX_DATA_CACHE', '/elsewhere')
  assert cli.data_cache_dir(None) == '/elsewhere'
  assert cli.data_cache_dir('/flag') == '/flag'
  assert cli.data_cache_dir('') is None  # --data_cache= turns it off
  monkeypatch.setenv('LNL_JAX_DATA_CACHE', '')
  assert cli.data_cache_dir(None) is None


@pytest.mark.parametrize('module, present, absent', [
    ('lnl_jax.evaluate', ['--workdir', '--checkpoint', '--data_root', '--compilation_cache'], []),
    ('launch.sweep', ['--config', '--sweep', '--runs_dir', '--print_only', '--members'], []),
    # launch.evidence imports lnl_jax.analysis, whose --workdir and --what it does not read.
    ('launch.evidence', ['--config', '--runs_dir', '--compilation_cache'], ['--workdir', '--what']),
    ('lnl_jax.report', ['--out'], ['--compilation_cache', '--data_cache']),  # runs no model
    ('lnl_jax.bench', ['--config', '--batch', '--compilation_cache'], ['--data_cache']),
])
def test_help_lists_the_flags_the_command_takes(module, present, absent):
  """`--help` (not only `--helpfull`) lists the flags a command takes from lnl_jax.cli and its
  `define_once`, beside its own, and not those of the tools it imports."""
  out = subprocess.run([sys.executable, '-m', module, '--help'], cwd=ROOT, capture_output=True,
                       text=True, timeout=300).stdout
  listed = {line.split(':')[0].strip().replace('[no]', '') for line in out.splitlines()
            if line.startswith('  --')}
  assert set(present) <= listed and not set(absent) & listed, out


CACHE_SETTINGS = ('jax_enable_compilation_cache', 'jax_compilation_cache_dir',
                  'jax_persistent_cache_min_compile_time_secs')


def test_enable_compilation_cache_turns_both_caches_on_in_the_folder_or_off(monkeypatch, tmp_path):
  """A folder ('~' expanded) turns JAX's persistent cache on there, for programs that compile in
  0.2 s or longer (README) when JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is unset, and keeps the
  lowered steps in its folder `lowered`; '' (`--compilation_cache=`) turns both off."""
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.delenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', raising=False)
  monkeypatch.setattr(program_store, '_directory', None)  # restored when the test ends
  monkeypatch.setattr(program_store, '_digest', None)
  saved = {name: jax.config.values[name] for name in CACHE_SETTINGS}
  try:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 5.0)
    cli.enable_compilation_cache('~/cache')
    assert [jax.config.values[name] for name in CACHE_SETTINGS] == [
        True, str(tmp_path / 'cache'), 0.2]
    assert program_store.directory() == str(tmp_path / 'cache' / 'lowered')
    cli.enable_compilation_cache('')
    assert jax.config.values['jax_enable_compilation_cache'] is False
    assert program_store.directory() is None
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)


@pytest.mark.parametrize('module', ['lnl_jax.bench', 'launch.compile_options'])
def test_a_bad_config_ends_a_command_without_a_workdir_with_one_line(module):
  """README: a bad config value ends every command with one line `error: ...` and status 1, also
  those that take no workdir (the benchmarks), and before they time anything."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # compile_options refuses it
  proc = subprocess.run([sys.executable, '-m', module, '--config=configs/raf.py',
                         '--config.model.num_patches=15'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[-1].startswith(
      'error: model.num_patches=15 is not n² for a whole n ≥ 1'), proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and proc.stdout == ''


@pytest.mark.parametrize('argv, expected', [
    (['--coordinator_address=host:1234', '--num_processes=2', '--process_id=0'],
     dict(coordinator_address='host:1234', num_processes=2, process_id=0)),  # process 0 included
    ([], {}),  # nothing given: jax reads the cluster's environment (Slurm, ...)
])
def test_distributed_flags_reach_jax_distributed_initialize(argv, expected, monkeypatch):
  """`lnl_jax.main --distributed` passes the flags given, and only those, to
  `jax.distributed.initialize` (itself not run here: it would wait for the other processes)."""
  seen = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: seen.append(kw))
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(['lnl_jax.main', '--distributed', *argv])
    main.initialize_distributed()
  finally:
    flags.FLAGS.unparse_flags()
  assert seen == [expected]
