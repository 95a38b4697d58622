"""Two JAX processes on 127.0.0.1 (CPU backend, gloo collectives) train like one process with the
same global batch: each reads its half of every batch, gradients are all-reduced, both write one
shared orbax checkpoint, and a SIGTERM to one of them stops both at the same step."""
import json
import os
import re
import signal
import socket

from processes import (assert_trees_identical, finalized_steps, load_state, main_command,
                       read_metrics)

# Checkpoints every 2 steps; processes agree on stopping after every step (log_every_steps=1).
FLAGS = ('--config.train.checkpoint_every_steps=2', '--config.train.log_every_steps=1')
STEPS = 12  # smoke: 2 epochs of 6 steps, global batch 16


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(launch, tmp_path, workdir, name: str) -> list:
  address = f'127.0.0.1:{free_port()}'
  return [launch(tmp_path / f'{name}{i}.log',
                 *main_command(workdir, *FLAGS, '--distributed', f'--coordinator_address={address}',
                               '--num_processes=2', f'--process_id={i}'),
                 devices=1)
          for i in range(2)]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, launch):
  single_dir, multi_dir = tmp_path / 'single', tmp_path / 'multi'
  # The reference: one process whose two devices split each global batch of 16 the same way.
  single = launch(tmp_path / 'single.log', *main_command(single_dir, *FLAGS), devices=2)
  first = start_processes(launch, tmp_path, multi_dir, 'first')

  # SIGTERM to process 1 alone: both must checkpoint the same step and stop, without a hang.
  first[1].wait_for_checkpoint(multi_dir, 2)
  first[1].proc.send_signal(signal.SIGTERM)
  stopped = []
  for i, proc in enumerate(first):
    rc, log = proc.wait(timeout=600)
    assert f'JAX process {i}/2' in log
    assert rc == 128 + signal.SIGTERM and 'Traceback' not in log, log[-4000:]
    stopped.append(int(re.search(r'preempted: SIGTERM received: checkpoint of step (\d+) written',
                                 log)[1]))
  assert stopped[0] == stopped[1] and 2 <= stopped[0] < STEPS, stopped
  assert max(finalized_steps(multi_dir)) == stopped[0]

  # The same two commands resume from that step and finish.
  for proc in start_processes(launch, tmp_path, multi_dir, 'second'):
    rc, log = proc.wait(timeout=600)
    assert rc == 0, log[-4000:]
    assert f'resuming at step {stopped[0]}' in log
  rc, log = single.wait()
  assert rc == 0, log[-4000:]
  assert 'JAX process 0/1, local devices [CpuDevice(id=0), CpuDevice(id=1)]' in log

  # One checkpoint written jointly by the two processes, readable as a whole; a sum over two
  # shards is the same float whichever process adds it, so the match is bit-identical.
  multi, reference = load_state(multi_dir, STEPS), load_state(single_dir, STEPS)
  assert int(multi['step']) == STEPS
  assert_trees_identical(multi, reference)
  records = [read_metrics(d) for d in (multi_dir, single_dir)]
  assert [r['epoch'] for r in records[0]] == [1, 2]
  assert records[0] == records[1]  # train loss over both halves, test accuracy over all 48 faces
  summaries = [json.load(open(d / 'summary.json')) for d in (multi_dir, single_dir)]
  assert summaries[0]['confusion_matrix'] == summaries[1]['confusion_matrix']
  assert sum(map(sum, summaries[0]['confusion_matrix'])) == 48  # every test face counted once
  assert sorted(os.listdir(multi_dir / 'plots')) == sorted(os.listdir(single_dir / 'plots'))
