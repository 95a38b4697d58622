"""The entry point as a subprocess, for the tests that kill, signal or race it, and what they read
back from its workdir (independently of lnl_jax: orbax and numpy only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fixtures import ROOT, command_env, run_module

SMOKE = '--config=configs/synthetic.py:smoke'
TIMEOUT = 900  # seconds for one smoke run on a loaded 2-core machine; a hang fails, never waits


def main_command(workdir, *flags, config=SMOKE):
  return [sys.executable, '-m', 'lnl_jax.main', config, f'--workdir={workdir}', *flags]


def run_main(workdir, *flags, devices: int = 1, optimised: bool = False) -> str:
  """`main_command` run to its end (exit status 0); its stderr."""
  return run_module(*main_command(workdir, *flags)[2:], devices=devices, optimised=optimised).stderr


class Main:
  """A `python -m lnl_jax.main` subprocess (fixtures.command_env: the session's compilation cache);
  its stdout and stderr go to a log file."""

  def __init__(self, log_path, *args, devices: int = 1):
    self.log_path = str(log_path)
    self._log = open(self.log_path, 'w')
    self.proc = subprocess.Popen(list(args), cwd=ROOT, env=command_env(devices),
                                 stdout=self._log, stderr=subprocess.STDOUT)

  def wait(self, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
      rc = self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      pytest.fail(f'{self.proc.args} ran over {timeout} s; log:\n{self.log()[-3000:]}')
    self._log.close()
    return rc, self.log()

  def log(self) -> str:
    with open(self.log_path, errors='backslashreplace') as f:
      return f.read()

  def wait_for_checkpoint(self, workdir, step: int, timeout: float = TIMEOUT) -> None:
    """Polls until a finalized checkpoint ≥ `step` exists (the process must still be running)."""
    deadline = time.time() + timeout
    while max(finalized_steps(workdir), default=-1) < step:
      if self.proc.poll() is not None:
        pytest.fail(f'training ended (rc {self.proc.returncode}) before checkpoint {step}:\n'
                    f'{self.log()[-3000:]}')
      if time.time() > deadline:
        self.proc.kill()
        pytest.fail(f'no checkpoint {step} after {timeout} s')
      time.sleep(0.05)


def finalized_steps(workdir) -> list[int]:
  """Steps of the complete checkpoints (orbax writes `<step>.orbax-checkpoint-tmp*`, then renames)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def load_state(workdir, step: int) -> dict:
  """The saved TrainState of `step` as a tree of numpy arrays, read with orbax independently of
  lnl_jax and of the devices that wrote it."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, restore_args=as_numpy)


def assert_trees_identical(a, b):
  """Bit-identical trees (same paths, shapes, dtypes and bytes); names the differing leaves."""
  flat_a = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(a)}
  flat_b = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(b)}
  assert flat_a.keys() == flat_b.keys()
  differ = {k: float(np.max(np.abs(flat_a[k].astype(np.float64) - flat_b[k])))
            for k in flat_a if not (flat_a[k].dtype == flat_b[k].dtype and
                                    np.array_equal(flat_a[k], flat_b[k]))}
  assert not differ, f'{len(differ)} of {len(flat_a)} leaves differ (max |Δ|): {list(differ.items())[:5]}'


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    del r['images_per_s']  # wall-clock speed, the one field that may differ
  return records
