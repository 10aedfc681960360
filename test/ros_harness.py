"""Test-side helpers for node tests over real DDS: start node processes, talk to them."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

REPO = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def start_node(executable: str, params: Optional[dict] = None, name: Optional[str] = None,
               params_file: bool = True) -> subprocess.Popen:
    """Start ``invdyn_ros.nodes.<executable>`` as ros2 run would, with the shipped YAML."""
    argv = [sys.executable, '-m', f'invdyn_ros.nodes.{executable}', '--ros-args']
    if name:
        argv += ['-r', f'__node:={name}']
    if params_file:
        argv += ['--params-file', str(REPO / 'config' / f'{name or executable}.yaml')]
    for k, v in (params or {}).items():
        argv += ['-p', f'{k}:={v}']
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy(), start_new_session=True)


def stop_node(p: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT (as ros2 launch does), then SIGKILL; returns the node's output."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.stdout.read() if p.stdout and not p.stdout.closed else ''


class Harness:
    """A test node in its own context, spinning in a background thread."""

    def __init__(self, name: str = 'invdyn_test') -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str = '',
                 state: Optional[Callable[[], object]] = None) -> None:
        """Poll ``cond`` until it holds; on time-out, fail naming ``what`` and, where given,
        what ``state()`` returns then (so a failure in CI says which part was missing)."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if cond():
                return
            time.sleep(0.02)
        seen = '' if state is None else f'; state then: {state()!r}'
        raise AssertionError(f'timed out after {timeout} s waiting for {what}{seen}')

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
