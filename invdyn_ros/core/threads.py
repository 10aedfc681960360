"""How many threads a process's numerical libraries may use, set deliberately.

numpy's OpenBLAS (and scipy's) starts one thread per core at import unless told otherwise, and
its idle threads spin before they sleep. On a 2-core machine beside a 1 kHz predictor that costs
more than it gains on this package's small matrices: measured, one online-trainer update took
7.4 ms (median of 100) with one BLAS thread and 22.6 ms with the default two while the other
core was busy. ``OMP_NUM_THREADS=1`` in the environment would do, but a node started by
``ros2 launch`` has the user's environment; so every node sets its own pools at start-up.
"""

from __future__ import annotations

import sys

from threadpoolctl import threadpool_limits


def limit_threads(n: int) -> None:
    """Limit the BLAS and OpenMP pools loaded in this process, and torch's intra-op pool if
    torch is imported, to ``n`` threads (>= 1), for the rest of the process."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f'threads must be a positive integer, got {n!r}')
    threadpool_limits(limits=n)
    torch = sys.modules.get('torch')
    if torch is not None:
        torch.set_num_threads(n)
