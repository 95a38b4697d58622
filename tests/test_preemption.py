"""Pre-emption and crashes of the real entry point (`python -m lnl_jax.main`, smoke size, as
subprocesses): SIGKILL, SIGINT and SIGTERM at different moments, then resume; and the states of
`StopSignal` that decide between ending at once and checkpointing first, in a process of its own."""
import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from fixtures import ROOT, command_env
from processes import (TIMEOUT, assert_trees_identical, finalized_steps, load_state, main_command,
                       read_metrics)


def test_sigkill_and_sigint_then_resume_equal_an_uninterrupted_run(tmp_path, launch):
  """SIGKILL in epoch 1, SIGINT (Ctrl-C) in epoch 2, a leftover half-written checkpoint, resume:
  the final parameters, optimiser state, metrics, confusion matrix and attention track are
  bit-identical to those of an uninterrupted run of the same seed (CPU, one device). SIGINT is a
  pre-emption like SIGTERM (test_multiprocess.py sends that one): a checkpoint of the current
  step, exit status 128 + SIGINT = 130 and the one-line message, no KeyboardInterrupt traceback."""
  flags = ('--config.train.checkpoint_every_steps=2',)
  ref_dir, run_dir = tmp_path / 'reference', tmp_path / 'interrupted'
  run = lambda name, workdir: launch(tmp_path / f'{name}.log', *main_command(workdir, *flags))
  reference = run('reference', ref_dir)
  # Its first checkpoint comes after every step (init, train, eval) has been compiled and cached;
  # from then on it runs alongside the interrupted runs.
  reference.wait_for_checkpoint(ref_dir, 2)

  # 1. SIGKILL as soon as the step-4 checkpoint is complete (mid epoch 1: 6 steps per epoch).
  first = run('first', run_dir)
  first.wait_for_checkpoint(run_dir, 4)
  first.proc.send_signal(signal.SIGKILL)
  assert first.wait()[0] == -signal.SIGKILL
  newest = max(finalized_steps(run_dir))

  # 2. The same command resumes from the newest complete checkpoint; SIGINT it in epoch 2.
  second = run('second', run_dir)
  second.wait_for_checkpoint(run_dir, 8)
  second.proc.send_signal(signal.SIGINT)
  rc, log = second.wait()
  assert f'resuming at step {newest}' in log
  assert rc == 128 + signal.SIGINT == 130, log[-3000:]
  assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
  preempted = re.search(r'preempted: SIGINT received: checkpoint of step (\d+) written; rerun the '
                        r'same command to resume\.', log)
  assert preempted, log[-3000:]
  stopped_at = int(preempted[1])
  # Step 8 itself when the signal came before step 9 ended (nothing unsaved: the process ends at
  # once); a later step otherwise.
  assert 8 <= stopped_at < 12 and max(finalized_steps(run_dir)) == stopped_at
  assert int(load_state(run_dir, stopped_at)['step']) == stopped_at

  # 3. A SIGKILL during a checkpoint write leaves orbax's temporary folder behind: here, of the
  #    final step, which the resumed run must then write over.
  leftover = run_dir / 'checkpoints' / '12.orbax-checkpoint-tmp' / 'state.orbax-checkpoint-tmp'
  leftover.mkdir(parents=True)
  (leftover / 'manifest.ocdbt').write_bytes(b'\x00' * 7)
  stale = run_dir / 'checkpoints' / '10.orbax-checkpoint-tmp-1795886308650247'
  stale.mkdir()

  third = run('third', run_dir)
  rc, log = third.wait()
  assert rc == 0, log[-3000:]
  assert f'resuming at step {stopped_at}' in log
  rc, ref_log = reference.wait()
  assert rc == 0, ref_log[-3000:]
  assert 'resuming' not in ref_log

  assert 12 in finalized_steps(run_dir) and 12 in finalized_steps(ref_dir)
  assert_trees_identical(load_state(run_dir, 12), load_state(ref_dir, 12))
  resumed, uninterrupted = read_metrics(run_dir), read_metrics(ref_dir)
  assert [r['epoch'] for r in resumed] == [1, 2]
  assert resumed == uninterrupted  # test accuracies, train loss/accuracy of resumed epochs too
  summaries = [json.load(open(d / 'summary.json')) for d in (run_dir, ref_dir)]
  for key in ('confusion_matrix', 'test_accuracy_mean_last_epochs', 'steps', 'best_checkpoint_step'):
    assert summaries[0][key] == summaries[1][key], key
  tracks = [np.load(d / 'attention_track.npz') for d in (run_dir, ref_dir)]
  np.testing.assert_array_equal(tracks[0]['steps'], np.arange(2, 13, 2))
  np.testing.assert_array_equal(tracks[0]['steps'], tracks[1]['steps'])
  np.testing.assert_array_equal(tracks[0]['w_global'], tracks[1]['w_global'])


def test_sigterm_while_the_first_step_compiles_ends_within_ten_seconds(tmp_path, launch):
  """SIGTERM while the first train step compiles (the `cpu` network, whose step takes tens of
  seconds to compile, and no compilation cache): no step has run, so there is nothing to save and
  the process ends within 10 s instead of after the compilation, writing no checkpoint."""
  workdir = tmp_path / 'run'
  run = launch(tmp_path / 'run.log', *main_command(
      workdir, '--compilation_cache=', '--config.data.num_train=64', '--config.data.num_test=32',
      config='--config=configs/synthetic.py:cpu'))
  deadline = time.time() + TIMEOUT
  while 'starting from scratch' not in run.log():  # logged after initialisation, before the step
    assert run.proc.poll() is None and time.time() < deadline, run.log()[-3000:]
    time.sleep(0.05)
  sent = time.time()
  run.proc.send_signal(signal.SIGTERM)
  rc, log = run.wait()
  assert time.time() - sent < 10, log[-3000:]
  assert rc == 128 + signal.SIGTERM, log[-3000:]
  assert ('preempted: SIGTERM received: no step had run, nothing to save; rerun the same command '
          'to resume.') in log
  assert 'Traceback' not in log and finalized_steps(workdir) == []


STOP_SIGNAL_STATES = textwrap.dedent('''
    import os, signal, sys, time
    from lnl_jax.preemption import StopSignal
    signals = (signal.SIGTERM, signal.SIGINT)
    before = [signal.getsignal(s) for s in signals]
    StopSignal().restore()
    if [signal.getsignal(s) for s in signals] != before:
      sys.exit(6)  # the handlers of before the run are not back
    stop = StopSignal()
    stop.stepped()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)  # room for the watcher to end the process, as it must not with a step unsaved
    if not stop.agreed(1):
      sys.exit(7)
    print('stopping after step 1', flush=True)  # the loop would checkpoint here
    stop.saved(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the watcher ends the process at once: nothing is unsaved
    sys.exit(8)
''')


def test_a_stop_signal_waits_for_the_checkpoint_of_unsaved_steps_only():
  """`StopSignal` in one process: `restore` puts the previous SIGTERM/SIGINT handlers back; a
  signal after a step is left to the loop (`agreed`), which checkpoints; once `saved`, a signal ends
  the process at once with 128 + signal and the line naming the checkpoint written."""
  proc = subprocess.run([sys.executable, '-c', STOP_SIGNAL_STATES], cwd=ROOT, env=command_env(),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, proc.stderr[-2000:])
  assert proc.stdout.splitlines() == ['stopping after step 1']
  assert ('preempted: SIGTERM received: checkpoint of step 1 written; rerun the same command to '
          'resume.') in proc.stderr
