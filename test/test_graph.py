"""The whole graph as `invdyn up` (= the launch file) starts it: simulated arm, predictor and
online trainer over DDS; the trainer's models reach the predictor; everything stops cleanly."""

import io
import threading
import time

from ros_harness import Harness, RELIABLE

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 - after the env is set
from sensor_msgs.msg import JointState

from invdyn_ros.graph import run_graph

TIMEOUT_S = 90.0


def test_trainer_models_reach_the_predictor_in_the_launched_graph():
    h = Harness('graph_test')
    diag = {}
    ff = []
    h.node.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: diag.update({s.name: {kv.key: kv.value for kv in s.values}
                               for s in m.status}), RELIABLE)
    h.node.create_subscription(JointState, '/invdyn/feedforward', ff.append, RELIABLE)
    stop = threading.Event()
    log = io.StringIO()
    result = {}
    th = threading.Thread(target=lambda: result.setdefault('rc', run_graph(
        'predict', ['sim:=true', 'trainer:=true'], stop=stop, sink=log)))
    th.start()
    try:
        def swapped():
            p = diag.get('invdyn: predictor', {})
            t = diag.get('invdyn: trainer', {})
            return int(p.get('model_updates', 0)) >= 1 and int(t.get('published', 0)) >= 1
        h.wait_for(swapped, TIMEOUT_S, 'a trainer model to be swapped into the predictor\n'
                   + log.getvalue()[-3000:])
        t = diag['invdyn: trainer']
        assert int(t['published']) >= 1 and int(t['updates']) >= 1
        p = diag['invdyn: predictor']
        assert int(p['model_version']) >= 2
        n = len(ff)
        time.sleep(1.0)
        assert len(ff) > n, 'feedforward keeps flowing after the swap'
    finally:
        stop.set()
        th.join(timeout=60)
        h.close()
    assert not th.is_alive(), 'invdyn up stopped its processes'
    assert result.get('rc') == 0, log.getvalue()[-3000:]
    assert 'Traceback' not in log.getvalue(), log.getvalue()[-3000:]
