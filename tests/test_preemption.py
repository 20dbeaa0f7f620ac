"""Tests of preemption.py: SIGTERM or Ctrl-C becomes "save this step and stop"."""

import os
import signal
import subprocess
import sys

from resnet_jax.run import preemption


def test_sigterm_is_noticed_at_the_next_step_and_timed():
  with preemption.PreemptionWatcher() as watcher:
    assert not watcher.reached(1)
    assert watcher.seconds_since_signal() is None
    os.kill(os.getpid(), signal.SIGTERM)  # Handled: the process lives on.
    assert watcher.reached(2) and watcher.reached(3)
    assert 0 <= watcher.seconds_since_signal() < 5


def test_the_previous_handler_is_back_afterwards():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher():
    assert signal.getsignal(signal.SIGTERM) is not before
  assert signal.getsignal(signal.SIGTERM) is before


def test_the_message_says_what_was_saved_and_what_to_do():
  message = str(preemption.Preempted(37, 0.25))
  assert message == ('preempted: saved a checkpoint at step 37 0.25 s after '
                     'SIGTERM; rerun the same command to resume from it')


def test_ctrl_c_is_noticed_like_sigterm_and_named():
  with preemption.PreemptionWatcher() as watcher:
    os.kill(os.getpid(), signal.SIGINT)  # No KeyboardInterrupt.
    assert watcher.reached(4) and watcher.signum == signal.SIGINT
  stopped = preemption.Preempted(4, 0.5, watcher.signum)
  assert stopped.exit_status == 130
  assert str(stopped).startswith('interrupted: saved a checkpoint at step 4 '
                                 '0.50 s after SIGINT')


def test_a_second_signal_stops_the_process_at_once():
  program = ('import os, signal, time\n'
             'from resnet_jax.run import preemption\n'
             'with preemption.PreemptionWatcher() as watcher:\n'
             '  os.kill(os.getpid(), signal.SIGINT)\n'
             '  assert watcher.reached(1)\n'
             '  os.kill(os.getpid(), signal.SIGINT)\n'
             '  time.sleep(30)\n'
             'print("still alive")\n')
  result = subprocess.run([sys.executable, '-c', program], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == -signal.SIGINT, result.stderr[-2000:]
  assert 'still alive' not in result.stdout
