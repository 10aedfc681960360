"""lwr_sim: the simulated KUKA LWR 4+ as a node, publishing /joint_states like a real arm.

Publishes:
    /joint_states (sensor_msgs/JointState) at rate_hz: position [rad], velocity [rad/s],
        effort = measured joint torque [Nm], all 7 joints. Stamps advance by exactly 1/rate_hz
        from the start time (simulated time on the ROS clock); when the timer falls behind,
        the node catches up by several steps, so the stream keeps pace with the wall clock.
Subscribes (optional, feedforward_topic):
    std_msgs/Float64MultiArray torque feedforward [Nm] for the 7 joints (or joints 1-5, the rest
        zero), added to the controller; ignored when older than STALE_FEEDFORWARD_S.
Parameters: see config/lwr_sim.yaml; payload_ml may be changed at run time
    (`ros2 param set /lwr_sim payload_ml 400`).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from invdyn_ros.core.lwr_sim import LwrSimConfig
from invdyn_ros.core.lwr_stream import LwrStream
from invdyn_ros.core.params import LwrSimParams, ParamError
from invdyn_ros.nodes.common import (EXIT_BAD_PARAMS, FEEDFORWARD_QOS, Rejections,
                                     declare_params, init_ros)

#: A feedforward older than this [s] is not applied (the predictor stopped or lags).
STALE_FEEDFORWARD_S = 0.05
#: At most this many steps per timer tick when catching up, so a stall is not replayed at once.
MAX_CATCH_UP_STEPS = 20
#: Timer period relative to the sample period: ticks a little faster and catches up by time.
TIMER_FRACTION = 1.0


class LwrSimNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('lwr_sim', **kwargs)
        self.params = declare_params(self, LwrSimParams)
        p = self.params
        try:
            self.stream = LwrStream(
                LwrSimConfig(rate_hz=p.rate_hz, payload_ml=p.payload_ml, seed=p.seed,
                             **({} if p.noise else {'q_noise_std': 0.0, 'qd_noise_std': 0.0,
                                                    'tau_noise_std': 0.0})),
                motion=p.motion)
        except ValueError as e:
            raise ParamError(str(e)) from None
        self.reject = Rejections(self)
        self._pub = self.create_publisher(JointState, '/joint_states', FEEDFORWARD_QOS)
        self._msg = JointState()
        self._msg.name = list(self.stream.joint_names)
        self._ff: Optional[np.ndarray] = None
        self._ff_time = -1e9
        if p.feedforward_topic:
            self.create_subscription(Float64MultiArray, p.feedforward_topic, self._on_ff,
                                     FEEDFORWARD_QOS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._t0_ns = self.get_clock().now().nanoseconds
        self._wall0 = time.monotonic()
        self._dt_ns = int(round(1e9 / p.rate_hz))
        self._skipped_ns = 0
        self.published = 0
        self.create_timer(TIMER_FRACTION / p.rate_hz, self._tick)
        self.get_logger().info(f'simulating the LWR 4+ at {p.rate_hz:g} Hz, payload '
                               f'{p.payload_ml:g} ml, motion {p.motion}')

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == 'payload_ml':
                try:
                    self.stream.set_payload(float(prm.value))
                except (TypeError, ValueError) as e:
                    return SetParametersResult(successful=False, reason=str(e))
                self.get_logger().info(f'payload now {float(prm.value):g} ml')
            elif prm.name in ('rate_hz', 'motion', 'seed', 'noise'):
                return SetParametersResult(successful=False,
                                           reason=f'{prm.name} is fixed at start-up')
        return SetParametersResult(successful=True)

    def _on_ff(self, msg: Float64MultiArray) -> None:
        ff = np.asarray(msg.data, dtype=np.float64)
        if ff.shape not in ((7,), (5,)) or not np.all(np.isfinite(ff)):
            self.reject('bad_feedforward', f'shape {ff.shape}')
            return
        self._ff = np.concatenate((ff, np.zeros(7 - len(ff))))
        self._ff_time = time.monotonic()

    def _tick(self) -> None:
        p = self.params
        due = int((time.monotonic() - self._wall0) * p.rate_hz)
        steps = min(max(due - self.published, 0), MAX_CATCH_UP_STEPS)
        for _ in range(steps):
            if p.duration_s and self.stream.time >= p.duration_s:
                return
            fresh = time.monotonic() - self._ff_time < STALE_FEEDFORWARD_S
            self.stream.step(self._ff if fresh else None)
            _, q, qd, tau = self.stream.measurement()
            stamp_ns = self._t0_ns + self._skipped_ns + self.published * self._dt_ns
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
