"""gp_baseline: the GP comparison beside the LSTM, at a decimated rate so it never lags.

Subscribes:
    /joint_states (sensor_msgs/JointState), joints matched by name. Every message updates the
        acceleration filter (cheap); every ``decimation``-th one is predicted.
Publishes:
    /invdyn/gp/feedforward (sensor_msgs/JointState): effort = GP mean torque [Nm], input stamp.
    /invdyn/gp/std (std_msgs/Float64MultiArray): predictive standard deviation [Nm] per joint.
    /diagnostics: rate, compute time, rejections.
The GP is fitted offline (``invdyn train --model gp``); this node only evaluates it. A GP
fitted with ``--target residual_rbd`` publishes the nominal RNEA plus its residual mean, one
with ``residual_gravity`` the residual alone (as the predictor does).
"""

from __future__ import annotations

import dataclasses
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from invdyn_ros.core.accel import AccelConfig, AccelEstimator, AccelStatus
from invdyn_ros.core.checkpoint import CheckpointError, load_checkpoint
from invdyn_ros.core.joint_map import JointMapper
from invdyn_ros.core.params import GpBaselineParams, ParamError
from invdyn_ros.core.threads import limit_threads
from invdyn_ros.nodes.common import (DIAGNOSTICS_QOS, EXIT_BAD_PARAMS, FEEDFORWARD_QOS,
                                     init_ros, LatencyWindow, Rejections, declare_params,
                                     diagnostics, joint_states_qos, refuse_runtime_changes,
                                     stamp_to_s)

DIAGNOSTICS_PERIOD_S = 1.0
JOINT_STATES_DEPTH = 10


class GpBaselineNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('gp_baseline', **kwargs)
        self.params = declare_params(self, GpBaselineParams)
        limit_threads(1)        # one message at a time; see invdyn_ros.core.threads
        refuse_runtime_changes(self)
        p = self.params
        if not p.model_path:
            raise ParamError('parameter model_path: a GP checkpoint is required (fit one with '
                             '`invdyn train --model gp`)')
        try:
            self.gp, meta = load_checkpoint(p.model_path, expect_kind='gp',
                                            joint_names=p.joint_names)
        except CheckpointError as e:
            raise ParamError(f'parameter model_path: {e}') from None
        accel = dataclasses.replace(AccelConfig.from_dict(meta.get('accel_config', {})),
                                    max_gap_s=p.max_gap_s)
        self._accel = AccelEstimator(len(p.joint_names), accel)
        self._rnea = None
        if meta.get('target') == 'residual_rbd':
            from invdyn_ros.core.nominal import NominalModel
            from invdyn_ros.core.targets import spec_from_meta
            try:
                self._rnea = NominalModel(spec_from_meta(meta)).rnea
            except ValueError as e:
                raise ParamError(f'parameter model_path: {p.model_path}: {e}') from None
        self._mapper = JointMapper(p.joint_names)
        self.reject = Rejections(self)
        self.latency = LatencyWindow()
        self._count = 0
        self.predicted = 0
        self._x = np.zeros(3 * len(p.joint_names))
        self._mean_pub = self.create_publisher(JointState, '/invdyn/gp/feedforward',
                                               FEEDFORWARD_QOS)
        self._std_pub = self.create_publisher(Float64MultiArray, '/invdyn/gp/std',
                                              FEEDFORWARD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        self.create_subscription(JointState, '/joint_states', self._on_joint_state,
                                 joint_states_qos(JOINT_STATES_DEPTH))
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._msg = JointState()
        self._msg.name = list(p.joint_names)
        self.get_logger().info(f'GP baseline ({self.gp.num_train} points) on every '
                               f'{p.decimation}. joint_states message')

    def _on_joint_state(self, msg: JointState) -> None:
        t0 = time.perf_counter()
        mapped, why = self._mapper.map(msg.name, msg.position, msg.velocity, msg.effort)
        if why is not None:
            self.reject(why.value)
            return
        t = stamp_to_s(msg.header.stamp)
        if t <= 0.0:
            self.reject('zero_stamp')
            return
        qd = mapped.qd
        qdd, status = self._accel.update(t, mapped.q, qd)
        if status is AccelStatus.DUPLICATE:
            self.reject('duplicate_stamp')
            return
        self._count += 1
        if self._count % self.params.decimation:
            return
        d = len(mapped.q)
        self._x[:d] = mapped.q
        self._x[d:2 * d] = qd if qd is not None else self._accel.state[1]
        self._x[2 * d:] = qdd
        mean, std = self.gp.predict_one(self._x)
        if self._rnea is not None:
            mean = mean + self._rnea(mapped.q, self._x[d:2 * d], qdd)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            self.reject('non_finite_output')
            return
        self._msg.header.stamp = msg.header.stamp
        self._msg.effort = mean.tolist()
        self._mean_pub.publish(self._msg)
        self._std_pub.publish(Float64MultiArray(data=std.tolist()))
        self.predicted += 1
        self.latency.add(time.perf_counter() - t0)

    def _publish_diagnostics(self) -> None:
        p50, p99 = self.latency.percentiles()
        values = {'predicted': self.predicted, 'compute_p50_us': f'{p50 * 1e6:.1f}',
                  'compute_p99_us': f'{p99 * 1e6:.1f}'}
        self._diag_pub.publish(diagnostics(self, 'invdyn: gp_baseline', values, self.reject,
                                           message='predicting'))


def main(args=None) -> int:
    init_ros(args)
    node = None
    executor = None
    try:
        node = GpBaselineNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParamError as e:
        print(f'[gp_baseline] invalid parameters: {e}', flush=True)
        return EXIT_BAD_PARAMS
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
