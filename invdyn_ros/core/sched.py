"""CPU scheduling of the node processes: a real-time class for the predictor's control path,
a lower share for the trainer's bulk work.

On a machine with more work than cores (here 2 cores carry the robot's publisher, the
predictor, the trainer and whatever consumes the feedforward), the Linux default scheduler
shares the CPU fairly, so a torch update in the trainer can hold the core the next joint_states
message waits for. The usual cure in ROS 2 control stacks (ros2_control's controller_manager
``thread_priority``, KUKA FRI clients) is SCHED_FIFO for the control threads and a plain
nice value for everything else. Both need permission (root, CAP_SYS_NICE or an ``rtprio``
limit in /etc/security/limits.conf); without it the node keeps running under the default
scheduler and says so.

Linux only in effect; elsewhere each call reports that it did nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Iterable

#: SCHED_FIFO priorities user code may take (1..98; 99 is left to the kernel's own watchdogs).
MIN_RT_PRIORITY = 1
MAX_RT_PRIORITY = 98
#: Largest niceness increment accepted (Linux clamps nice values at 19).
MAX_NICE = 19


@dataclass(frozen=True)
class SchedResult:
    """What a scheduling request achieved: ``applied`` and a one-line account for the log."""

    applied: bool
    message: str


def _thread_ids() -> list[int]:
    """Native ids of every thread of this process (DDS threads included)."""
    try:
        return sorted(int(t) for t in os.listdir('/proc/self/task'))
    except OSError:
        return [os.getpid()]


def set_realtime(priority: int, exclude: Iterable[int] = ()) -> SchedResult:
    """Put every thread of this process, except the native thread ids in ``exclude``, under
    SCHED_FIFO at ``priority`` (1..98); 0 does nothing. Threads started later inherit it.

    Never raises for lack of permission or support: the result says what happened.
    Raises ValueError for a priority outside 0..98.
    """
    if not 0 <= int(priority) <= MAX_RT_PRIORITY:
        raise ValueError(f'real-time priority must be 0 (off) or {MIN_RT_PRIORITY}..'
                         f'{MAX_RT_PRIORITY}, got {priority}')
    if priority == 0:
        return SchedResult(False, 'real-time scheduling off (priority 0)')
    if not hasattr(os, 'sched_setscheduler'):
        return SchedResult(False, 'real-time scheduling not supported on this platform')
    skip = set(exclude)
    tids = [t for t in _thread_ids() if t not in skip]
    param = os.sched_param(int(priority))
    done = 0
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
            done += 1
        except ProcessLookupError:
            continue                    # the thread ended meanwhile
        except PermissionError:
            return SchedResult(False, f'SCHED_FIFO {priority} not permitted (needs root, '
                               'CAP_SYS_NICE or an rtprio limit); default scheduler kept')
        except OSError as e:
            return SchedResult(False, f'SCHED_FIFO {priority} refused: {e}; default '
                               'scheduler kept')
    return SchedResult(done > 0, f'SCHED_FIFO priority {priority} on {done} threads')


def leave_realtime() -> SchedResult:
    """Put the calling thread back under the default scheduler (for worker threads of a
    real-time process whose work must not compete with its control path)."""
    if not hasattr(os, 'sched_setscheduler'):
        return SchedResult(False, 'not supported on this platform')
    try:
        # pid 0 is the calling thread on Linux.
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        return SchedResult(False, f'could not leave SCHED_FIFO: {e}')
    return SchedResult(True, 'default scheduler')


def lower_priority(increment: int) -> SchedResult:
    """Raise the nice value of every thread of this process by ``increment`` (0..19): the
    process then yields the CPU to normal and real-time processes. Threads started later
    inherit it. (Linux keeps a nice value per thread, so each is set.)"""
    if not 0 <= int(increment) <= MAX_NICE:
        raise ValueError(f'nice increment must be in 0..{MAX_NICE}, got {increment}')
    if increment == 0:
        return SchedResult(False, 'nice value unchanged (increment 0)')
    if not hasattr(os, 'setpriority'):
        return SchedResult(False, 'nice values not supported on this platform')
    done, value = 0, None
    for tid in _thread_ids():
        try:
            value = min(os.getpriority(os.PRIO_PROCESS, tid) + int(increment), MAX_NICE)
            os.setpriority(os.PRIO_PROCESS, tid, value)
            done += 1
        except ProcessLookupError:
            continue
        except OSError as e:
            return SchedResult(False, f'could not lower the priority: {e}')
    return SchedResult(done > 0, f'nice value {value} on {done} threads')
