"""The predictor node over DDS against bad input and faults (issue 6): velocity or effort
absent, a publisher that stops and resumes, stamps that jump by seconds, one second's 1,000
messages at once, bad model messages, parameters set at run time. Each test checks the numbers
that come out, not only that something does."""

import math
import time

import numpy as np
import pytest

from ros_harness import Harness, LATCHED, RELIABLE, start_node, stop_node
from test_nodes import _model, _offline, J, T0

from diagnostic_msgs.msg import DiagnosticArray  # noqa: I100 - after the env is set
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import (checkpoint_to_bytes, lstm_weights_from_bytes,
                                        save_checkpoint)
from invdyn_ros.core.lwr_sim import simulate
from invdyn_ros.core.online import OnlinePredictor
from invdyn_ros.core.params import LWR_TORQUE_LIMITS_1_TO_5

SEND_RATE_HZ = 400.0
META = {'accel_config': AccelConfig().to_dict()}


@pytest.fixture(scope='module')
def s(tmp_path_factory):
    d = tmp_path_factory.mktemp('faults')
    traj = simulate(1.2, payload_ml=300.0, seed=6)
    m1, m2 = _model(1, traj), _model(2, traj)
    path = save_checkpoint(d / 'm1.npz', m1, {**META, 'model_version': 1})
    # Deep queues both ways: a 1000-message burst is answered faster than this Python harness
    # takes the answers, so the node's reliable publishers must hold them all.
    proc = start_node('predictor', {'model_path': str(path), 'diagnostics_period_s': 0.1,
                                    'qos_depth': 5000, 'feedforward_depth': 5000})
    h = Harness('predictor_faults')
    st = dict(h=h, proc=proc, traj=traj, m1=m1, m2=m2, model=m1, dir=d, ff=[], cmd=[],
              diag={}, offset=0.0)
    h.node.create_subscription(JointState, '/invdyn/feedforward', st['ff'].append, RELIABLE)
    h.node.create_subscription(Float64MultiArray, '/invdyn/feedforward_cmd',
                               lambda m: st['cmd'].append(list(m.data)), RELIABLE)
    h.node.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda m: st['diag'].update({x.name: {kv.key: kv.value for kv in x.values}
                                     for x in m.status}), RELIABLE)
    st['pub'] = h.node.create_publisher(JointState, '/joint_states', RELIABLE)
    st['model_pub'] = h.node.create_publisher(UInt8MultiArray, '/invdyn/model', LATCHED)
    h.wait_for(lambda: st['pub'].get_subscription_count() > 0, 30, 'the predictor')
    h.wait_for(lambda: st['model_pub'].get_subscription_count() > 0, 30, 'its model topic')
    h.wait_for(lambda: 'invdyn: predictor' in st['diag'], 30, 'its diagnostics')
    time.sleep(1.0)
    yield st
    h.close()
    out = stop_node(proc)
    assert 'Traceback' not in out, out
    if st.get('bad_models_sent'):
        # The first refusal of each kind is logged with its reason (then rate-limited).
        assert 'rejected input (bad_model: checkpoint model message on /invdyn/model:' in out
        assert 'rejected input (stale_model: version 1 <= 1 in use)' in out, out


def _diag(s, key):
    return int(s['diag']['invdyn: predictor'].get(key, 0))


def _stamped(s, n):
    """Stamps for n samples 1 ms apart, far after anything sent before (so the predictor's
    state starts afresh): seconds [s] (float) and (sec, nanosec)."""
    s['offset'] += 100.0
    ns = np.round((T0 + s['offset'] + np.arange(n) / 1000.0) * 1e9).astype(np.int64)
    return ns * 1e-9, ns // 10**9, ns % 10**9


def _publish(s, tr, sec, nsec, velocity=True, effort=True, rate_hz=SEND_RATE_HZ):
    for k in range(len(tr)):
        m = JointState()
        m.header.stamp.sec, m.header.stamp.nanosec = int(sec[k]), int(nsec[k])
        m.name = list(J)
        m.position = tr.q[k].tolist()
        m.velocity = tr.qd[k].tolist() if velocity else []
        m.effort = tr.tau[k].tolist() if effort else []
        s['pub'].publish(m)
        if rate_hz:
            time.sleep(1.0 / rate_hz)


def _collect(s, n0, n, timeout=20.0):
    s['h'].wait_for(lambda: len(s['ff']) - n0 >= n, timeout, f'{n} answers')
    time.sleep(0.2)
    out = s['ff'][n0:]
    assert len(out) == n, f'{len(out)} answers to {n} messages'
    tau = np.array([m.effort for m in out])
    assert np.all(np.isfinite(tau)) and np.all(np.abs(tau) <= LWR_TORQUE_LIMITS_1_TO_5)
    return out, tau


def _stamps_of(out):
    return np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in out])


def test_velocity_absent_is_estimated_and_effort_absent_changes_nothing(s):
    tr = s['traj'].select(J).slice(0, 400)
    # No velocity: the filter's estimate stands in, exactly as the core does it.
    t, sec, nsec = _stamped(s, len(tr))
    n0 = len(s['ff'])
    _publish(s, tr, sec, nsec, velocity=False)
    _, tau = _collect(s, n0, len(tr))
    weights, _ = lstm_weights_from_bytes(checkpoint_to_bytes(s['model'], META))
    ref = OnlinePredictor(weights, AccelConfig(), LWR_TORQUE_LIMITS_1_TO_5)
    want = np.array([ref.update(t[k], tr.q[k], None).tau for k in range(len(tr))])
    np.testing.assert_allclose(tau, want, atol=1e-9)
    # No effort: the same answers as with effort (the predictor never reads it).
    t, sec, nsec = _stamped(s, len(tr))
    n0 = len(s['ff'])
    _publish(s, tr, sec, nsec, effort=False)
    _, tau = _collect(s, n0, len(tr))
    np.testing.assert_allclose(tau, _offline(s['model'], tr, t), atol=1e-6)


def test_publisher_stops_and_resumes_and_stamps_jump_forward(s):
    tr = s['traj'].select(J)
    t, sec, nsec = _stamped(s, 900)
    jump = 5 * 10**9                         # the last third 5 s later: the state resets
    sec[600:] += jump // 10**9
    resets0 = _diag(s, 'resets')
    n0 = len(s['ff'])
    _publish(s, tr.slice(0, 300), sec[:300], nsec[:300])
    time.sleep(1.5)                          # the publisher stops, then resumes on its clock
    _publish(s, tr.slice(300, 900), sec[300:], nsec[300:])
    out, tau = _collect(s, n0, 900)
    np.testing.assert_array_equal(_stamps_of(out), sec * 10**9 + nsec)
    # A pause of the publisher is not a gap in the stamps: one uninterrupted sequence.
    np.testing.assert_allclose(tau[:600], _offline(s['model'], tr.slice(0, 600), t[:600]),
                               atol=1e-6)
    # After the jump, exactly what a freshly started predictor says.
    np.testing.assert_allclose(tau[600:], _offline(s['model'], tr.slice(600, 900),
                                                   t[600:] + 5.0), atol=1e-6)
    s['h'].wait_for(lambda: _diag(s, 'resets') - resets0 == 2, 5,
                    'two resets: the sequence start and the jump')


def test_one_seconds_thousand_messages_at_once(s):
    tr = s['traj'].select(J).slice(0, 1000)
    t, sec, nsec = _stamped(s, 1000)
    sent = sec * 10**9 + nsec
    n0 = len(s['ff'])
    answered0 = _diag(s, 'answered')
    _publish(s, tr, sec, nsec, rate_hz=0)    # back to back
    try:
        s['h'].wait_for(lambda: len(s['ff']) - n0 >= 1000, 20, '1000 answers')
    except AssertionError:
        pass            # judged below: DDS may drop a best-effort burst on a starved machine
    time.sleep(0.5)
    out = s['ff'][n0:]
    stamps = _stamps_of(out)
    tau = np.array([m.effort for m in out])
    assert np.all(np.isfinite(tau)) and np.all(np.abs(tau) <= LWR_TORQUE_LIMITS_1_TO_5)
    # Every message the node got is answered, in order, with its own stamp; it counts them.
    assert np.all(np.isin(stamps, sent)) and np.all(np.diff(stamps) > 0)
    s['h'].wait_for(lambda: _diag(s, 'answered') - answered0 == len(out), 5,
                    'diagnostics counting every answer')
    # The queue (qos_depth 5000) holds the whole burst: nothing is dropped by the node (with
    # the shipped depth of 10 only a few dozen would be answered). The transport may still lose
    # part of a best-effort burst when the machine is starved of CPU (seen: 912 of 1000 under
    # a load of 5 on 2 cores); everything up to the first loss must then still be exact.
    assert len(out) >= 500, f'{len(out)} of 1000 answered'
    lost = np.flatnonzero(stamps != sent[:len(stamps)])
    k = int(lost[0]) if len(lost) else len(out)
    np.testing.assert_allclose(tau[:k], _offline(s['model'], tr, t)[:k], atol=1e-6)


# --- model messages ---------------------------------------------------------------------------

def _unpack(data):
    import io
    import json
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(zf.read(n)), allow_pickle=False)
                  for n in zf.namelist()}
    return json.loads(arrays.pop('header').tobytes().decode()), arrays


def _repack(header, arrays):
    import io
    import json
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


class _Hostile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _bad_models(s):
    """(what, bytes, expected rejection kind) of model messages the predictor must refuse."""
    good = checkpoint_to_bytes(s['m2'], {**META, 'model_version': 10})
    header, arrays = _unpack(good)
    out = []
    h = dict(header, joint_names=list(reversed(J)), model_version=12)
    out.append(('joints in another order', _repack(h, arrays), 'bad_model'))
    h = dict(header, joint_names=list(J[:4]) + ['other_joint'], model_version=13)
    out.append(('another joint', _repack(h, arrays), 'bad_model'))
    a = dict(arrays)
    a['weight.head.weight'] = np.zeros((5, 7), dtype=np.float32)
    h = dict(header, weights=dict(header['weights'], **{'head.weight': [5, 7]}),
             model_version=14)
    out.append(('weight shape', _repack(h, a), 'bad_model'))
    h = dict(header, format_version=99, model_version=15)
    out.append(('format version 99', _repack(h, arrays), 'bad_model'))
    out.append(('truncated', good[:len(good) // 2], 'bad_model'))
    out.append(('empty', b'', 'bad_model'))
    a = dict(arrays)
    a['weight.head.bias'] = np.full_like(arrays['weight.head.bias'], np.nan)
    out.append(('NaN weights', _repack(dict(header, model_version=16), a), 'bad_model'))
    a = dict(arrays)
    a['weight.evil'] = np.array([_Hostile(s['dir'] / 'pwned')], dtype=object)
    out.append(('pickle', _repack(dict(header, model_version=17), a), 'bad_model'))
    out.append(('same version', checkpoint_to_bytes(s['m2'], {**META, 'model_version': 1}),
                'stale_model'))
    out.append(('older version', checkpoint_to_bytes(s['m2'], {**META, 'model_version': 0}),
                'stale_model'))
    return out


def test_bad_model_messages_are_refused_and_the_old_model_kept(s):
    bad = _bad_models(s)
    kinds0 = {k: _diag(s, f'rejected_{k}') for k in ('bad_model', 'stale_model')}
    version0 = _diag(s, 'model_version')
    for what, data, kind in bad:
        before = _diag(s, f'rejected_{kind}')
        s['model_pub'].publish(UInt8MultiArray(data=data))
        s['h'].wait_for(lambda: _diag(s, f'rejected_{kind}') == before + 1, 10,
                        f'the {what} model to be refused as {kind}')
    s['bad_models_sent'] = True
    assert not (s['dir'] / 'pwned').exists(), 'the pickle was never unpickled'
    assert _diag(s, 'rejected_bad_model') - kinds0['bad_model'] == 8
    assert _diag(s, 'rejected_stale_model') - kinds0['stale_model'] == 2
    assert _diag(s, 'model_version') == version0 == 1 and _diag(s, 'model_updates') == 0
    # The old model is the one answering.
    tr = s['traj'].select(J).slice(0, 300)
    t, sec, nsec = _stamped(s, len(tr))
    n0 = len(s['ff'])
    _publish(s, tr, sec, nsec)
    _, tau = _collect(s, n0, len(tr))
    np.testing.assert_allclose(tau, _offline(s['m1'], tr, t), atol=1e-6)
    # And after all that garbage, a good model still gets in.
    s['model_pub'].publish(UInt8MultiArray(data=checkpoint_to_bytes(
        s['m2'], {**META, 'model_version': 20})))
    time.sleep(1.0)         # decoded off the control path, swapped in before the next input
    s['model'] = s['m2']
    t, sec, nsec = _stamped(s, len(tr))
    n0 = len(s['ff'])
    _publish(s, tr, sec, nsec)
    _, tau = _collect(s, n0, len(tr))
    np.testing.assert_allclose(tau, _offline(s['m2'], tr, t), atol=1e-6)
    s['h'].wait_for(lambda: _diag(s, 'model_version') == 20, 5, 'model version 20')


# --- parameters at run time -------------------------------------------------------------------

def _value(v):
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
    if all(isinstance(x, float) for x in v):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=v)


def set_param(h, node, name, value):
    """What `ros2 param set /node name value` does: the node's set_parameters service."""
    cli = h.node.create_client(SetParameters, f'/{node}/set_parameters')
    try:
        assert cli.wait_for_service(timeout_sec=10.0)
        fut = cli.call_async(SetParameters.Request(
            parameters=[Parameter(name=name, value=_value(value))]))
        h.wait_for(fut.done, 10, 'set_parameters')
        return fut.result().results[0]
    finally:
        h.node.destroy_client(cli)


def get_param(h, node, name):
    cli = h.node.create_client(GetParameters, f'/{node}/get_parameters')
    try:
        assert cli.wait_for_service(timeout_sec=10.0)
        fut = cli.call_async(GetParameters.Request(names=[name]))
        h.wait_for(fut.done, 10, 'get_parameters')
        return fut.result().values[0]
    finally:
        h.node.destroy_client(cli)


@pytest.mark.parametrize('name,value,reason', [
    ('max_gap_s', 5, 'start-up only'),              # an integer for a double: still refused
    ('max_gap_s', -1.0, 'start-up only'),
    ('max_gap_s', math.nan, 'start-up only'),
    ('max_gap_s', 'five', 'type'),
    ('torque_limits', [1e9] * 5, 'start-up only'),
    ('torque_limits', ['a'], 'type'),
    ('qos_depth', True, 'type'),
    ('model_path', '/etc/passwd', 'start-up only'),
])
def test_runtime_parameter_changes_are_refused_and_the_node_keeps_serving(s, name, value,
                                                                          reason):
    before = get_param(s['h'], 'predictor', name)
    r = set_param(s['h'], 'predictor', name, value)
    assert not r.successful and reason in r.reason.lower(), r.reason
    assert get_param(s['h'], 'predictor', name) == before
    tr = s['traj'].select(J).slice(0, 30)
    t, sec, nsec = _stamped(s, len(tr))
    n0 = len(s['ff'])
    _publish(s, tr, sec, nsec)
    _, tau = _collect(s, n0, len(tr))
    np.testing.assert_allclose(tau, _offline(s['model'], tr, t), atol=1e-6)
    assert s['proc'].poll() is None


def test_setting_an_undeclared_parameter_is_refused(s):
    r = set_param(s['h'], 'predictor', 'no_such_parameter', 1.0)
    assert not r.successful
    assert s['proc'].poll() is None
