"""lwr_sim: the simulated KUKA LWR 4+ as a node, publishing /joint_states like a real arm.

Publishes:
    /joint_states (sensor_msgs/JointState) at rate_hz: position [rad], velocity [rad/s],
        effort = measured joint torque [Nm], all 7 joints. Stamps advance by exactly 1/rate_hz
        from the start time (simulated time on the ROS clock); when the timer falls behind,
        the node catches up by several steps, so the stream keeps pace with the wall clock.
    reference_topic (optional, JointState): the reference the controller tracks, position =
        desired q [rad], velocity = desired qd [rad/s], ``reference_lead_s`` ahead and stamped
        with its own sample time: the input of a predictor computing the feedforward.
    /diagnostics: feedforward received / applied / dropped as stale or malformed, its lag, and
        the tracking error (RMS of true q - desired q over the feedforward joints) [rad].
Subscribes (controller 'pd' only, feedforward_topic):
    torque feedforward [Nm] added to the PD law: std_msgs/Float64MultiArray in
        feedforward_joints order (feedforward_type 'array', e.g. the predictor's
        /invdyn/feedforward_cmd), or sensor_msgs/JointState with effort by joint name
        (feedforward_type 'joint_state', e.g. /invdyn/feedforward; its stamp gives the lag).
        The latest one is applied at every step until it is older than feedforward_timeout_s;
        then it is dropped (counted in /diagnostics) and never applied; non-finite or
        misshapen messages are rejected (counted).
Controller: 'computed_torque' (default) tracks the reference with the nominal model + PD, the
    data-generation mode, and takes no feedforward (the model already supplies the torque);
    'pd' is PD alone (stiffness scaled by gain_scale) plus the feedforward.
Parameters: see config/lwr_sim.yaml; payload_ml may be changed at run time
    (`ros2 param set /lwr_sim payload_ml 400`).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from invdyn_ros.core.lwr_sim import LwrSimConfig
from invdyn_ros.core.lwr_stream import LwrStream
from invdyn_ros.core.params import LwrSimParams, ParamError
from invdyn_ros.core.threads import limit_threads
from invdyn_ros.nodes.common import (DIAGNOSTICS_QOS, EXIT_BAD_PARAMS, FEEDFORWARD_QOS,
                                     LatencyWindow, Rejections, declare_params, diagnostics,
                                     init_ros, stamp_to_s)

#: At most this many steps per timer tick when catching up, so a stall is not replayed at once.
MAX_CATCH_UP_STEPS = 20
#: Timer period relative to the sample period: ticks a little faster and catches up by time.
TIMER_FRACTION = 1.0


class LwrSimNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('lwr_sim', **kwargs)
        self.params = declare_params(self, LwrSimParams)
        limit_threads(1)        # one simulation step at a time; see invdyn_ros.core.threads
        p = self.params
        try:
            self.stream = LwrStream(
                LwrSimConfig(rate_hz=p.rate_hz, payload_ml=p.payload_ml, seed=p.seed,
                             **({} if p.noise else {'q_noise_std': 0.0, 'qd_noise_std': 0.0,
                                                    'tau_noise_std': 0.0})),
                motion=p.motion, controller=p.controller, gain_scale=p.gain_scale)
        except ValueError as e:
            raise ParamError(str(e)) from None
        names = list(self.stream.joint_names)
        unknown = sorted(set(p.feedforward_joints) - set(names))
        if unknown:
            raise ParamError(f'parameter feedforward_joints: {unknown} are not joints of the '
                             f'arm {names}')
        self.reject = Rejections(self)
        self._pub = self.create_publisher(JointState, '/joint_states', FEEDFORWARD_QOS)
        self._msg = JointState()
        self._msg.name = names
        self._index = {n: i for i, n in enumerate(names)}
        self._ff_cols = np.array([self._index[n] for n in p.feedforward_joints])
        self._tracked = self._ff_cols          # joints whose tracking error is reported
        self._ff: Optional[np.ndarray] = None
        self._ff_time = -1e9                   # monotonic receipt time [s]
        self._ff_ref_t = None                  # stamp of the reference it answers [s]
        self._ff_new = False
        self.ff_received = 0
        self.ff_applied_steps = 0
        self.ff_lag = LatencyWindow()          # reference published -> answer applied [s]
        self._sq_err = 0.0
        self._sq_n = 0
        self._sq_err_total = 0.0
        self._sq_n_total = 0
        self._lead = int(round(p.reference_lead_s * p.rate_hz))
        self._ref_pub = None
        if p.reference_topic:
            self._ref_pub = self.create_publisher(JointState, p.reference_topic,
                                                  FEEDFORWARD_QOS)
            self._ref = JointState()
            self._ref.name = names
        if p.controller == 'pd' and p.feedforward_topic:
            if p.feedforward_type == 'array':
                self.create_subscription(Float64MultiArray, p.feedforward_topic, self._on_ff,
                                         FEEDFORWARD_QOS)
            else:
                self.create_subscription(JointState, p.feedforward_topic, self._on_ff_state,
                                         FEEDFORWARD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                               DIAGNOSTICS_QOS)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._t0_ns = self.get_clock().now().nanoseconds
        self._wall0 = time.monotonic()
        self._dt_ns = int(round(1e9 / p.rate_hz))
        self._skipped_ns = 0
        self.published = 0
        self.create_timer(TIMER_FRACTION / p.rate_hz, self._tick)
        self.get_logger().info(
            f'simulating the LWR 4+ at {p.rate_hz:g} Hz, payload {p.payload_ml:g} ml, motion '
            f'{p.motion}, controller {p.controller} (gain scale {p.gain_scale:g})'
            + (f', feedforward from {p.feedforward_topic} ({p.feedforward_type})'
               if p.controller == 'pd' and p.feedforward_topic else ''))

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == 'payload_ml':
                try:
                    self.stream.set_payload(float(prm.value))
                except (TypeError, ValueError) as e:
                    return SetParametersResult(successful=False, reason=str(e))
                self.get_logger().info(f'payload now {float(prm.value):g} ml')
            elif prm.name not in ('payload_ml', 'use_sim_time'):
                return SetParametersResult(successful=False,
                                           reason=f'{prm.name} is fixed at start-up')
        return SetParametersResult(successful=True)

    def _on_ff(self, msg: Float64MultiArray) -> None:
        ff = np.asarray(msg.data, dtype=np.float64)
        if ff.shape != self._ff_cols.shape or not np.all(np.isfinite(ff)):
            self.reject('bad_feedforward', f'shape {ff.shape}, need '
                        f'{len(self._ff_cols)} finite values')
            return
        full = np.zeros(len(self._index))
        full[self._ff_cols] = ff
        self._set_ff(full, None)

    def _on_ff_state(self, msg: JointState) -> None:
        ff = np.asarray(msg.effort, dtype=np.float64)
        if (len(msg.name) != len(ff) or len(set(msg.name)) != len(msg.name)
                or not np.all(np.isfinite(ff))):
            self.reject('bad_feedforward', 'names and efforts differ in length, repeat, or '
                        'efforts are not finite')
            return
        full = np.zeros(len(self._index))
        for name, v in zip(msg.name, ff):
            i = self._index.get(name)
            if i is None:
                self.reject('bad_feedforward', f'unknown joint {name!r}')
                return
            full[i] = v
        self._set_ff(full, stamp_to_s(msg.header.stamp))

    def _set_ff(self, full: np.ndarray, stamp_s: Optional[float]) -> None:
        self._ff = full
        self._ff_time = time.monotonic()
        # The reference this answers was published lead samples before its own stamp.
        self._ff_ref_t = None if stamp_s is None else stamp_s - self._lead / self.params.rate_hz
        self._ff_new = True
        self.ff_received += 1

    def _feedforward(self, stamp_s: float) -> Optional[np.ndarray]:
        """The feedforward for the step at ``stamp_s`` [s]: the latest one unless stale."""
        if self._ff is None:
            return None
        age = time.monotonic() - self._ff_time
        if self._ff_ref_t is not None:
            age = max(age, stamp_s - self._ff_ref_t)
        if age > self.params.feedforward_timeout_s:
            self._ff = None
            self.reject('stale_feedforward', f'{age * 1e3:.1f} ms old')
            return None
        if self._ff_new and self._ff_ref_t is not None:
            self.ff_lag.add(stamp_s - self._ff_ref_t)
        self._ff_new = False
        self.ff_applied_steps += 1
        return self._ff

    def _publish_reference(self, stamp_ns: int) -> None:
        s = self.stream
        q_des, qd_des, _ = s.reference_at(s.sample + self._lead)
        ns = stamp_ns + self._lead * self._dt_ns
        m = self._ref
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        m.position, m.velocity = q_des.tolist(), qd_des.tolist()
        self._ref_pub.publish(m)

    def _tick(self) -> None:
        p = self.params
        due = int((time.monotonic() - self._wall0) * p.rate_hz)
        steps = min(max(due - self.published, 0), MAX_CATCH_UP_STEPS)
        for _ in range(steps):
            if p.duration_s and self.stream.time >= p.duration_s:
                return
            stamp_ns = self._t0_ns + self._skipped_ns + self.published * self._dt_ns
            if self._ref_pub is not None:
                self._publish_reference(stamp_ns)
            q_des = self.stream.reference()[0]
            e = (self.stream.true_position() - q_des)[self._tracked]
            self._sq_err += float(e @ e)
            self._sq_n += len(e)
            self.stream.step(self._feedforward(stamp_ns * 1e-9)
                             if p.controller == 'pd' else None)
            _, q, qd, tau = self.stream.measurement()
            m = self._msg
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            m.position, m.velocity, m.effort = q.tolist(), qd.tolist(), tau.tolist()
            self._pub.publish(m)
            self.published += 1
        behind = due - self.published
        if behind > MAX_CATCH_UP_STEPS * 10:
            # Far behind (machine overloaded): drop the backlog rather than replay it. The
            # stamps jump by the skipped time, so they stay on the wall clock and consumers
            # see an honest gap (the predictor resets its state on it).
            self.reject('overrun', f'{behind} samples behind; skipping ahead')
            self._skipped_ns += behind * self._dt_ns
            self._wall0 += behind / p.rate_hz

    def _publish_diagnostics(self) -> None:
        p50, p99 = self.ff_lag.percentiles()
        self._sq_err_total += self._sq_err
        self._sq_n_total += self._sq_n
        rms = (self._sq_err / self._sq_n) ** 0.5 if self._sq_n else float('nan')
        rms_total = ((self._sq_err_total / self._sq_n_total) ** 0.5 if self._sq_n_total
                     else float('nan'))
        self._sq_err, self._sq_n = 0.0, 0
        values = {'sim_time_s': f'{self.stream.time:.3f}', 'steps': self.published,
                  'payload_ml': f'{self.stream.sim.payload_ml:g}',
                  'controller': self.params.controller,
                  'gain_scale': f'{self.params.gain_scale:g}',
                  'feedforward_received': self.ff_received,
                  'feedforward_applied_steps': self.ff_applied_steps,
                  'feedforward_lag_p50_ms': f'{p50 * 1e3:.2f}',
                  'feedforward_lag_p99_ms': f'{p99 * 1e3:.2f}',
                  'tracking_rms_rad': f'{rms:.6g}', 'tracking_rms_total_rad': f'{rms_total:.6g}'}
        self._diag_pub.publish(diagnostics(self, 'invdyn: lwr_sim', values, self.reject,
                                           message='simulating'))


def main(args=None) -> int:
    init_ros(args)
    node = None
    executor = None
    try:
        node = LwrSimNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParamError as e:
        print(f'[lwr_sim] invalid parameters: {e}', flush=True)
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
