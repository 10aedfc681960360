"""Scheduling of the node processes (core.sched): SCHED_FIFO for the predictor's threads, a
nice value for the trainer's. Each call that changes scheduling runs in a child process, so
pytest itself keeps its own."""

import subprocess
import sys
import textwrap

import pytest

from invdyn_ros.core.sched import lower_priority, MAX_NICE, MAX_RT_PRIORITY, set_realtime

LINUX = sys.platform.startswith('linux')


#: Every child starts with a second thread parked on an event (``worker``, released by ``ev``)
#: and the thread ids of the process at hand (``tids()``).
PRELUDE = '''
import os, threading
from invdyn_ros.core.sched import leave_realtime, lower_priority, set_realtime
ev = threading.Event()
worker = threading.Thread(target=ev.wait)
worker.start()
def tids():
    return [int(t) for t in os.listdir('/proc/self/task')]
'''


def _child(code: str) -> str:
    r = subprocess.run([sys.executable, '-c', PRELUDE + textwrap.dedent(code)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_zero_means_off_and_bad_values_are_refused():
    assert not set_realtime(0).applied
    assert not lower_priority(0).applied
    for bad in (-1, MAX_RT_PRIORITY + 1):
        with pytest.raises(ValueError, match='real-time priority'):
            set_realtime(bad)
    for bad in (-1, MAX_NICE + 1):
        with pytest.raises(ValueError, match='nice increment'):
            lower_priority(bad)


@pytest.mark.skipif(not LINUX, reason='SCHED_FIFO per thread is Linux only')
def test_realtime_covers_every_thread_but_the_excluded_one():
    out = _child('''
        res = set_realtime(10, exclude=[worker.native_id])
        pol = {t: os.sched_getscheduler(t) for t in tids()}
        print(res.applied, res.message)
        print(sum(p == os.SCHED_FIFO for p in pol.values()), len(pol),
              pol[worker.native_id] == os.SCHED_OTHER)
        # A thread started afterwards inherits the class; it can leave it.
        box = []
        def later():
            box.append(os.sched_getscheduler(0) == os.SCHED_FIFO)
            box.append(leave_realtime().applied and os.sched_getscheduler(0) == os.SCHED_OTHER)
        t = threading.Thread(target=later)
        t.start(); t.join(); ev.set(); worker.join()
        print(box)
    ''').splitlines()
    applied = out[0].startswith('True')
    if not applied:
        # No permission here: a clear account, nothing changed, nothing raised.
        assert 'not permitted' in out[0] or 'refused' in out[0], out
        assert out[1].split()[0] == '0', out
        return
    fifo, n, worker_other = out[1].split()
    assert int(fifo) == int(n) - 1 and worker_other == 'True', out
    assert out[2] == '[True, True]', out


@pytest.mark.skipif(not LINUX, reason='per-thread nice values are Linux behaviour')
def test_lower_priority_raises_the_nice_value_of_every_thread():
    out = _child('''
        before = os.getpriority(os.PRIO_PROCESS, worker.native_id)
        res = lower_priority(5)
        print(res.applied, before, sorted({os.getpriority(os.PRIO_PROCESS, t) for t in tids()}))
        ev.set(); worker.join()
    ''').split(maxsplit=2)
    assert out[0] == 'True', out
    assert out[2].strip() == f'[{min(int(out[1]) + 5, MAX_NICE)}]', out
