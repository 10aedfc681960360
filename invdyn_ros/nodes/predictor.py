"""predictor: /joint_states -> acceleration estimate -> stateful LSTM -> feedforward torques.

Subscribes:
    /joint_states (sensor_msgs/JointState), joints matched by name; best-effort QoS, so both
        reliable and best-effort publishers connect.
    /invdyn/model (std_msgs/UInt8MultiArray, reliable, transient local): checkpoint bytes from
        the trainer; decoded in a worker thread, off the control path, and swapped in between
        two joint_states callbacks. Taken when newer: a higher version of the same trainer
        run, or any version of another run (a restarted trainer counts again from its start
        checkpoint's version); otherwise refused as stale_model.
Publishes, for every accepted input:
    /invdyn/feedforward (sensor_msgs/JointState): names, effort = torque [Nm], the input's stamp.
    /invdyn/feedforward_cmd (std_msgs/Float64MultiArray): torques in joint_names order, what a
        ros2_control forward_command_controller (interface effort) takes on ~/commands.
    /invdyn/samples (std_msgs/Float64MultiArray, reliable; forward_samples): the accepted
        samples that carry velocity and effort, in blocks of samples_per_message (stamp, q, qd,
        effort per row; core.samples), for the trainer. Published after the feedforward.
    /diagnostics (diagnostic_msgs/DiagnosticArray): rate, latency, rejections, model version,
        and with forward_samples the number of matched sample-block subscribers.
Services:
    ~/reset (std_srvs/Trigger): forget the LSTM state and the acceleration filter.

Targets: a model trained on ``residual_rbd`` publishes the nominal rigid-body torque (Pinocchio
RNEA on the URDF stored in the checkpoint) plus its residual; one trained on
``residual_gravity`` publishes only the residual (the robot's controller adds gravity); a
``full`` model its output. Pinocchio is imported only for a residual target. Model updates
must carry the same target and nominal model, or they are refused.

Nothing unsafe leaves the node: non-finite inputs are rejected, outputs are finite and clamped
to torque_limits, and a sample that cannot be answered safely is not answered.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import queue
import threading
import time
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt8MultiArray
from std_srvs.srv import Trigger

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import (CheckpointError, load_lstm_weights,
                                        lstm_weights_from_bytes, session_of, supersedes)
from invdyn_ros.core.joint_map import JointMapper
from invdyn_ros.core.lstm_numpy import NumpyLstmStepper
from invdyn_ros.core.online import OnlinePredictor
from invdyn_ros.core.params import ParamError, PredictorParams
from invdyn_ros.core.samples import layout as sample_layout, SampleBlocker
from invdyn_ros.core.sched import set_realtime
from invdyn_ros.core.targets import (DEFAULT_TARGET, payload_mass, RESIDUAL_TARGETS,
                                     spec_from_meta)
from invdyn_ros.core.threads import limit_threads
from invdyn_ros.nodes.common import (DIAGNOSTICS_QOS, EXIT_BAD_PARAMS, FEEDFORWARD_QOS,
                                     init_ros, LatencyWindow, MODEL_QOS, Rejections,
                                     SAMPLES_QOS,
                                     declare_params, default_model_path, diagnostics,
                                     joint_states_qos, refuse_runtime_changes, stamp_to_s)
from invdyn_ros.nodes.receiver import DedicatedReceiver
from invdyn_ros.nodes.wire import SerializedFeedforward

DEFAULT_MODEL = 'lwr4plus_j1-5_lstm.npz'
#: Model messages waiting to be decoded; more than this and the oldest are refused.
MODEL_QUEUE = 4
#: How often the decoder thread checks for shutdown [s].
DECODER_POLL_S = 0.2


class PredictorNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('predictor', **kwargs)
        self.params = declare_params(self, PredictorParams)
        # One thread for numpy's BLAS: the control path is one thread, and idle BLAS threads
        # spinning on a small machine would compete with it (invdyn_ros.core.threads).
        limit_threads(1)
        refuse_runtime_changes(self)
        p = self.params
        path = p.model_path or default_model_path(DEFAULT_MODEL)
        try:
            model, meta = load_lstm_weights(path, joint_names=p.joint_names)
        except CheckpointError as e:
            raise ParamError(f'parameter model_path: {e}') from None
        self._accel = dataclasses.replace(
            AccelConfig.from_dict(meta.get('accel_config', {})), max_gap_s=p.max_gap_s)
        self.target = meta.get('target', DEFAULT_TARGET)
        self._spec = spec_from_meta(meta)        # validated by the loader already
        nominal = None
        if self.target in RESIDUAL_TARGETS:
            # Imported only here: a 'full' predictor never loads Pinocchio.
            from invdyn_ros.core.nominal import NominalModel
            try:
                nominal = NominalModel(self._spec)
            except ValueError as e:
                raise ParamError(f'parameter model_path: {path}: {e}') from None
        try:
            self._online = OnlinePredictor(model, self._accel, p.torque_limits,
                                           target=self.target, nominal=nominal,
                                           inference=p.inference)
        except ValueError as e:
            raise ParamError(f'parameter inference: {e}') from None
        self.model_version = int(meta.get('model_version', 0))
        self._session = session_of(meta)
        self._pending: Optional[tuple] = None
        self._pending_lock = threading.Lock()
        self._mapper = JointMapper(p.joint_names)
        self.reject = Rejections(self)
        self.latency = LatencyWindow()          # callback entry -> both publishes returned
        self.publish_latency = LatencyWindow()  # of which the two publish calls
        self.answered = 0
        self.clamped = 0
        self.resets = 0
        self.model_updates = 0
        self.realtime = 'not applied'
        self._last_diag = (time.monotonic(), 0)

        ff_qos = QoSProfile(history=FEEDFORWARD_QOS.history, depth=p.feedforward_depth,
                            reliability=FEEDFORWARD_QOS.reliability,
                            durability=FEEDFORWARD_QOS.durability)
        self._ff_pub = self.create_publisher(JointState, '/invdyn/feedforward', ff_qos)
        self._cmd_pub = self.create_publisher(Float64MultiArray, '/invdyn/feedforward_cmd',
                                              ff_qos)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        self._blocker = None
        if p.forward_samples:
            self._blocker = SampleBlocker(p.joint_names, p.samples_per_message)
            self._samples_pub = self.create_publisher(Float64MultiArray, p.samples_topic,
                                                      SAMPLES_QOS)
            self._samples_msg = Float64MultiArray()
            self._samples_msg.layout.dim = [
                MultiArrayDimension(label=label, size=size, stride=stride)
                for label, size, stride in sample_layout(p.joint_names, p.samples_per_message)]
        # One executor thread: joint states, ~/reset and diagnostics never overlap, so a reset
        # never lands mid-step. Model bytes are only queued by their callback and decoded by a
        # worker thread (milliseconds of work that must not delay a joint_states callback).
        self._control_lock = threading.Lock()
        js_sub = self.create_subscription(JointState, '/joint_states', self._on_joint_state,
                                          joint_states_qos(p.qos_depth))
        self._receiver: Optional[DedicatedReceiver] = None
        self.receive = 'executor'
        if p.receive == 'thread':
            try:
                self._receiver = DedicatedReceiver(self, js_sub, self._on_joint_state,
                                                   name='invdyn-joint-states')
                self.receive = 'dedicated thread'
            except RuntimeError as e:       # this rclpy lacks the calls it needs
                self.receive = f'executor ({e})'
                self.get_logger().warning(f'receive: thread not possible, {e}; joint_states '
                                          'stay on the executor')
        self.create_service(Trigger, '~/reset', self._on_reset)
        self._model_bytes: queue.Queue = queue.Queue(maxsize=MODEL_QUEUE)
        self._stop = threading.Event()
        self.create_subscription(UInt8MultiArray, p.model_topic, self._on_model, MODEL_QOS)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self._decoder = threading.Thread(target=self._decode_models, name='invdyn-model-decoder',
                                         daemon=True)
        self._decoder.start()
        self._ff = JointState()
        self._ff.name = list(p.joint_names)
        self._cmd = Float64MultiArray()
        # The two feedforward messages serialized once and patched per sample (see
        # invdyn_ros.nodes.wire); as messages if this rclpy serializes another way.
        self._wire: Optional[SerializedFeedforward] = None
        try:
            self._wire = SerializedFeedforward(p.joint_names)
            self.publish_mode = 'serialized'
        except RuntimeError as e:
            self.publish_mode = f'messages ({e})'
            self.get_logger().warning(f'feedforward published as messages: {e}')
        self.get_logger().info(
            f'predicting {list(p.joint_names)} with {path} (model version '
            f'{self.model_version}, {model.config.num_layers}x{model.config.hidden_size} LSTM, '
            f'{model.config.rate_hz:g} Hz, target {self.target}, inference '
            f'{self._online.path})')

    # --- control path ------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        # The receiver thread and the executor's ~/reset never interleave.
        with self._control_lock:
            self._handle_joint_state(msg)

    def _handle_joint_state(self, msg: JointState) -> None:
        t0 = time.perf_counter()
        if self._pending is not None:
            self._swap_model()
        mapped, why = self._mapper.map(msg.name, msg.position, msg.velocity, msg.effort)
        if why is not None:
            self.reject(why.value)
            return
        t = stamp_to_s(msg.header.stamp)
        if t <= 0.0:
            self.reject('zero_stamp')
            return
        r = self._online.update(t, mapped.q, mapped.qd)
        if r.tau is None:
            self.reject(r.rejected.value)
            return
        self.resets += r.reset
        self.clamped += r.clamped
        if self._wire is not None:
            stamp = msg.header.stamp
            ff, cmd = self._wire.fill(stamp.sec, stamp.nanosec, r.tau)
        else:
            ff, cmd = self._ff, self._cmd
            ff.header.stamp = msg.header.stamp
            ff.effort = r.tau.tolist()
            cmd.data = ff.effort
        t_pub = time.perf_counter()
        self._ff_pub.publish(ff)
        self._cmd_pub.publish(cmd)
        self.answered += 1
        t_end = time.perf_counter()
        self.latency.add(t_end - t0)
        # The publishes' share apart: with readers in other processes it is DDS's write,
        # several times the computation before it.
        self.publish_latency.add(t_end - t_pub)
        # After the publishes (not on the feedforward's latency): the sample for the trainer.
        if self._blocker is not None and mapped.qd is not None and mapped.tau is not None:
            block = self._blocker.add(t, mapped.q, mapped.qd, mapped.tau)
            if block is not None:
                data = array.array('d')
                data.frombytes(block.tobytes())      # the message's own type: no conversion
                self._samples_msg.data = data
                self._samples_pub.publish(self._samples_msg)

    def _swap_model(self) -> None:
        with self._pending_lock:
            model, version, nominal, spec, session = self._pending
            self._pending = None
        try:
            self._online.swap_model(model, nominal=nominal)
        except ValueError as e:
            self.reject('model_mismatch', str(e))
            return
        self._spec = spec
        self.model_version = version
        self._session = session
        self.model_updates += 1

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        with self._control_lock:
            self._online.reset()
            self.resets += 1
        response.success = True
        response.message = 'LSTM state and acceleration filter reset'
        return response

    # --- off the control path ----------------------------------------------------------------
    def _on_model(self, msg: UInt8MultiArray) -> None:
        try:
            self._model_bytes.put_nowait(msg.data)
        except queue.Full:
            self.reject('model_backlog', 'models arrive faster than they can be decoded')

    def _decode_models(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._model_bytes.get(timeout=DECODER_POLL_S)
            except queue.Empty:
                continue
            try:
                model, meta = lstm_weights_from_bytes(
                    bytes(data), joint_names=self.params.joint_names,
                    source=f'model message on {self.params.model_topic}')
            except CheckpointError as e:
                self.reject('bad_model', str(e))
                continue
            version = int(meta.get('model_version', 0))
            target = meta.get('target', DEFAULT_TARGET)
            spec = spec_from_meta(meta)
            # A residual_rbd model may bring another payload (the trainer's adapt: payload):
            # the same robot carrying another load, served by rebuilding the nominal model.
            # Anything else about the nominal model must stay as it is.
            rbd = target == 'residual_rbd'
            if target != self.target or (spec is not None
                                         and not spec.same_model(self._spec, payload=not rbd)):
                self.reject('target_mismatch', f'model version {version} learned {target!r}'
                            f'{" on another nominal model" if target == self.target else ""},'
                            f' this predictor serves {self.target!r}')
                continue
            session = session_of(meta)
            if not supersedes((version, session), (self.model_version, self._session)):
                run = f' (trainer run {session})' if session else ''
                self.reject('stale_model',
                            f'version {version} <= {self.model_version} in use{run}')
                continue
            nominal = None
            if rbd and not spec.same_model(self._spec):
                from invdyn_ros.core.nominal import NominalModel
                try:
                    nominal = NominalModel(spec)
                except ValueError as e:
                    self.reject('bad_model', f'model version {version}: {e}')
                    continue
            # Fusing the weights takes a few hundred microseconds (building a nominal model a
            # few milliseconds): done here, so the swap on the control path is only a
            # reference change.
            model = NumpyLstmStepper(model, dtype=self._online.dtype)
            if self._online.path == 'compiled':
                model.fused_buffer()        # what the compiled path reads, made here too
            with self._pending_lock:
                self._pending = (model, version, nominal, spec, session)
            run = (f' from a new trainer run ({session})'
                   if session and session != self._session else '')
            self.get_logger().info(f'model version {version}{run} received; swapping in')

    def start_receiving(self) -> None:
        """Start the joint_states thread (receive: thread); call once the node spins."""
        if self._receiver is not None:
            self._receiver.start()

    def destroy_node(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
        self._stop.set()
        self._decoder.join(timeout=2.0)
        super().destroy_node()

    def apply_realtime(self) -> None:
        """SCHED_FIFO at ``realtime_priority`` for every thread of the process (the executor
        and Fast DDS's receive threads, all on the path of a joint_states message) except the
        model decoder, which stays under the default scheduler: its milliseconds of work must
        not compete with the control path. Without permission: a warning, and the node runs on.
        """
        res = set_realtime(self.params.realtime_priority, exclude=[self._decoder.native_id])
        self.realtime = res.message if res.applied else f'off: {res.message}'
        if res.applied or self.params.realtime_priority == 0:
            self.get_logger().info(res.message)
        else:
            self.get_logger().warning(res.message)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        t_last, n_last = self._last_diag
        rate = (self.answered - n_last) / max(now - t_last, 1e-9)
        self._last_diag = (now, self.answered)
        p50, p99 = self.latency.percentiles()
        pub50, pub99 = self.publish_latency.percentiles()
        values = {'rate_hz': f'{rate:.1f}', 'compute_p50_us': f'{p50 * 1e6:.1f}',
                  'compute_p99_us': f'{p99 * 1e6:.1f}', 'publish_p50_us': f'{pub50 * 1e6:.1f}',
                  'publish_p99_us': f'{pub99 * 1e6:.1f}', 'answered': self.answered,
                  'clamped': self.clamped, 'resets': self.resets,
                  'model_version': self.model_version, 'model_updates': self.model_updates,
                  'target': self.target, 'realtime': self.realtime, 'receive': self.receive,
                  'publish': self.publish_mode, 'inference': self._online.path,
                  'payload_mass_kg': f'{payload_mass(self._spec):.3f}'}
        if self._blocker is not None:
            # Whether a trainer hears the sample blocks: blocks sent while none is matched
            # (volatile topic) are not delivered later.
            values['samples_subscribers'] = self._samples_pub.get_subscription_count()
        self._diag_pub.publish(diagnostics(
            self, 'invdyn: predictor', values, self.reject, ok=rate > 0,
            message='predicting' if rate > 0 else 'no valid joint_states'))


def main(args=None) -> int:
    init_ros(args)
    node = None
    executor = None
    try:
        node = PredictorNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.start_receiving()
        node.apply_realtime()
        # Everything built so far (modules, the model, rclpy objects) lives for the whole run:
        # keep it out of the cyclic garbage collector's passes, which would otherwise walk it
        # all in the middle of some joint_states callback (a p99 outlier).
        gc.collect()
        gc.freeze()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParamError as e:
        print(f'[predictor] invalid parameters: {e}', flush=True)
        return EXIT_BAD_PARAMS
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        # Collect what the run froze while the interpreter is whole: left to interpreter
        # teardown, an rclpy executor Task was once finalised half torn down and printed an
        # "Exception ignored ... Future.__del__" traceback on exit (CI, stop 15).
        gc.unfreeze()
        gc.collect()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
