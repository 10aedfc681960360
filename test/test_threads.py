"""Every node sets its numerical libraries' thread pools itself (invdyn_ros.core.threads);
the nodes' per-message timing window."""

import subprocess
import sys

import pytest

from invdyn_ros.core.threads import limit_threads


def test_limit_threads_sets_blas_and_torch_pools() -> None:
    # A fresh process: the limit is process-wide and must not leak into other tests.
    code = (
        'import numpy, torch\n'
        'from threadpoolctl import threadpool_info\n'
        'from invdyn_ros.core.threads import limit_threads\n'
        'limit_threads(1)\n'
        'blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]\n'
        'assert blas and all(n == 1 for n in blas), blas\n'
        'assert torch.get_num_threads() == 1\n'
        'limit_threads(2)\n'
        'assert torch.get_num_threads() == 2\n'
        'print("ok")\n')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr


@pytest.mark.parametrize('bad', [0, -1, 1.5, True, '2'])
def test_limit_threads_refuses_nonsense(bad) -> None:
    with pytest.raises(ValueError, match='positive integer'):
        limit_threads(bad)


def test_latency_window_keeps_the_newest_in_order() -> None:
    """What the bench reads as the node's own per-message span."""
    from invdyn_ros.nodes.common import LatencyWindow
    w = LatencyWindow(3)
    assert w.values().size == 0
    for v in (1.0, 2.0):
        w.add(v)
    assert w.values().tolist() == [1.0, 2.0]
    for v in (3.0, 4.0, 5.0):
        w.add(v)
    assert w.values().tolist() == [3.0, 4.0, 5.0]
    assert w.percentiles((50,)) == [4.0]
