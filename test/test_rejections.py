"""Rejected input is counted every time, logged at most every REJECT_LOG_PERIOD_S per kind
(with the running count), and reported in /diagnostics by kind."""

from invdyn_ros.nodes import common
from invdyn_ros.nodes.common import diagnostics, REJECT_LOG_PERIOD_S, Rejections


class _Logger:
    def __init__(self):
        self.lines = []

    def warning(self, msg):
        self.lines.append(msg)


class _Node:
    def __init__(self):
        self.logger = _Logger()

    def get_logger(self):
        return self.logger

    def get_clock(self):
        class _Clock:
            def now(self):
                class _T:
                    def to_msg(self):
                        from builtin_interfaces.msg import Time
                        return Time(sec=1)
                return _T()
        return _Clock()


def test_every_rejection_counted_each_kind_logged_at_a_limited_rate(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(common.time, 'monotonic', lambda: now[0])
    node = _Node()
    reject = Rejections(node)
    for k in range(10_000):                  # a flood: 10 kHz for one second
        now[0] += 1e-4
        reject('non_finite', 'NaN in position')
        if k % 10 == 0:
            reject('empty')
    assert reject.counts == {'non_finite': 10_000, 'empty': 1_000}
    assert reject.total == 11_000
    lines = node.logger.lines
    assert len(lines) == 2, lines            # one per kind within the period
    assert lines[0] == 'rejected input (non_finite: NaN in position); 1 so far'
    assert lines[1] == 'rejected input (empty); 1 so far'
    now[0] += REJECT_LOG_PERIOD_S
    reject('non_finite', 'NaN in position')
    assert node.logger.lines[-1] == 'rejected input (non_finite: NaN in position); 10001 so far'
    arr = diagnostics(node, 'invdyn: test', {'answered': 5}, reject)
    values = {kv.key: kv.value for kv in arr.status[0].values}
    assert values == {'answered': '5', 'rejected_total': '11001',
                      'rejected_non_finite': '10001', 'rejected_empty': '1000'}
