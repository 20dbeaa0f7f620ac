"""Tests of preemption.py: SIGTERM becomes "save this step and stop"."""

import os
import signal

from resnet_jax import preemption


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
