"""trainer: learns the model during operation and hands new weights to the predictor.

Subscribes (``input``):
    /invdyn/samples (std_msgs/Float64MultiArray, reliable; input ``samples``, the default):
        blocks of 128 accepted samples (stamp, q, qd, effort) forwarded by the predictor, which
        receives every /joint_states message anyway; at 1 kHz this trainer then takes 8
        messages a second instead of 1000 (each rclpy message costs its executor about as much
        CPU as a no-op relay spends), so on a small machine it leaves the CPU to the predictor.
        Malformed blocks are refused and counted (core.samples).
    /joint_states (sensor_msgs/JointState; input ``joint_states``, for a trainer without a
        predictor, and whenever record_bag is set): effort = measured torque [Nm]; messages
        without effort are skipped (counted), as are malformed ones.
Publishes:
    /invdyn/model (std_msgs/UInt8MultiArray, reliable, transient local): a complete checkpoint
        (the same bytes as a model file: config, weights, normalisation, joints, rate, version,
        and this run's id, ``trainer_session``), only when the candidate scores no worse than
        the model in operation on held-back data. Versions count from the start checkpoint's;
        the predictor takes a newer version of the same run, or any model of another run (a
        restarted trainer).
        Weights travel over ROS, so predictor and trainer may run on different machines.
    /diagnostics: updates, publications, rejected candidates, losses.

Targets: the trainer learns what the model it starts from learned (the checkpoint's
``target``): for a residual target the measured torque minus the nominal model stored in the
checkpoint (on the same acceleration estimate as the inputs), and every published model carries
the same target and nominal model, so the predictor keeps publishing the same quantity.

The callback only maps the message and appends it (microseconds); updates run in a worker
thread, so training never delays the subscription (nor, being another process, the predictor).
Optionally records every message it sees into rotating rosbag2 folders (record_bag), so
``invdyn train --data <record_bag>`` can retrain offline, and saves each published model
atomically (checkpoint_path).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
import threading
import time
import uuid

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from invdyn_ros.core.accel import AccelConfig
from invdyn_ros.core.checkpoint import (CheckpointError, checkpoint_to_bytes, load_checkpoint,
                                        save_checkpoint, SESSION_KEY)
from invdyn_ros.core.joint_map import JointMapper
from invdyn_ros.core.online_learning import OnlineConfig, OnlineLearner
from invdyn_ros.core.params import ParamError, TrainerParams
from invdyn_ros.core.samples import decode_block, SampleBlockError
from invdyn_ros.core.sched import lower_priority
from invdyn_ros.core.targets import (DEFAULT_TARGET, payload_mass, RESIDUAL_TARGETS,
                                     spec_from_meta)
from invdyn_ros.core.threads import limit_threads
from invdyn_ros.nodes.common import (DIAGNOSTICS_QOS, EXIT_BAD_PARAMS, init_ros, MODEL_QOS,
                                     Rejections, SAMPLES_QOS, declare_params,
                                     default_model_path, diagnostics,
                                     joint_states_qos, refuse_runtime_changes, stamp_to_s)
from invdyn_ros.nodes.predictor import DEFAULT_MODEL

#: How often the worker looks for new batches when idle [s].
WORKER_IDLE_S = 0.005
DIAGNOSTICS_PERIOD_S = 1.0
JOINT_STATES_DEPTH = 100
#: How often the recording is flushed even when no message arrives [s]: a kill loses at most
#: this much (the recorder itself flushes on writes at its own interval, 1 s).
RECORD_FLUSH_PERIOD_S = 1.0
#: Hex digits of the run id in each published model (64 random bits).
SESSION_ID_CHARS = 16


class TrainerNode(Node):
    """See the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__('trainer', **kwargs)
        self.params = declare_params(self, TrainerParams)
        refuse_runtime_changes(self)
        p = self.params
        path = p.model_path or default_model_path(DEFAULT_MODEL)
        try:
            model, meta = load_checkpoint(path, expect_kind='lstm', joint_names=p.joint_names)
        except CheckpointError as e:
            raise ParamError(f'parameter model_path: {e}') from None
        limit_threads(p.threads)            # torch's pool and numpy's BLAS alike
        self._meta = meta
        accel = dataclasses.replace(AccelConfig.from_dict(meta.get('accel_config', {})),
                                    max_gap_s=p.max_gap_s)
        self._accel_dict = accel.to_dict()
        self.target = meta.get('target', DEFAULT_TARGET)
        spec = spec_from_meta(meta)
        self._target_meta = {'target': self.target}
        nominal = None
        if self.target in RESIDUAL_TARGETS:
            from invdyn_ros.core.nominal import NominalModel
            try:
                nominal = NominalModel(spec)
            except ValueError as e:
                raise ParamError(f'parameter model_path: {path}: {e}') from None
            self._target_meta['nominal'] = spec.to_dict()
        try:
            self.learner = OnlineLearner(model, accel, OnlineConfig.from_params(p),
                                         target=self.target, nominal=nominal)
        except ValueError as e:
            raise ParamError(f'parameter adapt: {e}') from None
        self.learner.model_version = int(meta.get('model_version', 1))
        # This run's id in every model it publishes: its versions restart from the start
        # checkpoint's, and the predictor tells a restarted trainer's models from stale ones.
        self.session = uuid.uuid4().hex[:SESSION_ID_CHARS]
        self._mapper = JointMapper(p.joint_names)
        self.reject = Rejections(self)
        self.recorder = None
        if p.record_bag:
            from invdyn_ros.core.bagio import JointStateBagRecorder
            self.recorder = JointStateBagRecorder()
            self.recorder.open(p.record_bag, topic='/joint_states', storage=p.record_storage,
                               max_bag_bytes=p.record_max_bytes or None,
                               max_bag_seconds=p.record_max_seconds or None)
        self._pub = self.create_publisher(UInt8MultiArray, p.model_topic, MODEL_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        # /joint_states itself only where needed: to learn from it (input joint_states) or to
        # record it. Otherwise the predictor's sample blocks: 1/128 of the messages.
        if p.input == 'joint_states' or self.recorder is not None:
            self.create_subscription(JointState, '/joint_states', self._on_joint_state,
                                     joint_states_qos(JOINT_STATES_DEPTH))
        if p.input == 'samples':
            self.create_subscription(Float64MultiArray, p.samples_topic, self._on_samples,
                                     SAMPLES_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        if self.recorder is not None:
            # Same executor thread as the writes, so never concurrent with one.
            self.create_timer(RECORD_FLUSH_PERIOD_S, self._flush_recording)
        self.samples = 0
        self.update_time_s = 0.0
        self._stop = threading.Event()
        self._last_publish = time.monotonic()
        self._worker = threading.Thread(target=self._work, name='invdyn-trainer', daemon=True)
        self._worker.start()
        # Every thread of the process (executor, Fast DDS, the update worker) yields the CPU
        # to the predictor and the controller: training is bulk work, they are not.
        res = lower_priority(p.nice)
        self.niceness = res.message if res.applied else f'unchanged: {res.message}'
        (self.get_logger().info if res.applied or p.nice == 0
         else self.get_logger().warning)(f'priority: {res.message}')
        self.get_logger().info(f'learning {list(p.joint_names)} online from {path}; batches of '
                               f'{p.batch_size}, Adagrad lr {p.learning_rate}, target '
                               f'{self.target}')

    def _on_joint_state(self, msg: JointState) -> None:
        if self.recorder is not None:
            try:
                stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                self.recorder.write(stamp_ns, list(msg.name), msg.position, msg.velocity,
                                    msg.effort)
            except Exception as e:  # noqa: BLE001 - recording must never stop learning
                self.reject('record_failed', str(e))
        if self.params.input != 'joint_states':
            return
        mapped, why = self._mapper.map(msg.name, msg.position, msg.velocity, msg.effort,
                                       need_velocity=True, need_effort=True)
        if why is not None:
            self.reject(why.value)
            return
        t = stamp_to_s(msg.header.stamp)
        if t <= 0.0:
            self.reject('zero_stamp')
            return
        self.learner.add_sample(t, mapped.q, mapped.qd, mapped.tau)
        self.samples += 1

    def _on_samples(self, msg: Float64MultiArray) -> None:
        dims = [(d.label, d.size, d.stride) for d in msg.layout.dim]
        try:
            block = decode_block(msg.data, dims, self.params.joint_names)
        except SampleBlockError as e:
            self.reject('bad_samples', str(e))
            return
        if block.t[0] <= 0.0:
            self.reject('zero_stamp')
            return
        add = self.learner.add_sample
        for k in range(len(block)):
            add(float(block.t[k]), block.q[k], block.qd[k], block.tau[k])
        self.samples += len(block)

    def _flush_recording(self) -> None:
        try:
            self.recorder.flush()
        except Exception as e:  # noqa: BLE001 - recording must never stop learning
            self.reject('record_failed', str(e))

    def _work(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            n = self.learner.train_pending(max_updates=1)
            if n:
                self.update_time_s = time.perf_counter() - t0
            else:
                time.sleep(WORKER_IDLE_S)
            if time.monotonic() - self._last_publish >= self.params.publish_period_s:
                self._last_publish = time.monotonic()
                self._maybe_publish()

    def _maybe_publish(self) -> None:
        fallbacks = self.learner.stats['fallbacks']
        model = self.learner.candidate()
        if model is None:
            return
        fell_back = self.learner.stats['fallbacks'] > fallbacks
        meta = {**self._target_meta, 'model_version': self.learner.model_version,
                SESSION_KEY: self.session, 'accel_config': self._accel_dict,
                'online': {'updates': self.learner.stats['updates'],
                           'payload_updates': self.learner.stats['payload_updates'],
                           'samples': self.samples,
                           'holdout_nmse': self.learner.last_scores[0]}}
        if self.learner.published_spec is not None:
            # adapt: payload changes the nominal model's payload, nothing else.
            meta['nominal'] = self.learner.published_spec.to_dict()
        data = checkpoint_to_bytes(model, meta)
        self._pub.publish(UInt8MultiArray(data=data))
        if self.params.checkpoint_path:
            save_checkpoint(Path(self.params.checkpoint_path), model, meta)
        new, old = self.learner.last_scores
        if fell_back:
            self.get_logger().warning(
                f'published model version {self.learner.model_version}: the starting model '
                f'again (it predicted the newest batches with nMSE {new:.4f}, the adapted '
                f'model {old:.4f}); training restarts from it')
        else:
            self.get_logger().info(f'published model version {self.learner.model_version} '
                                   f'(held-back nMSE {new:.4f} vs {old:.4f})')

    def _publish_diagnostics(self) -> None:
        st = self.learner.stats
        values = {'samples': self.samples, 'updates': st['updates'], 'session': self.session,
                  'published': st['published'], 'model_version': self.learner.model_version,
                  'candidates_rejected': st['candidates_rejected'],
                  'diverged_discarded': st['diverged_discarded'],
                  'dropped_behind': st['dropped_behind'], 'pending': self.learner.pending(),
                  'last_update_ms': f'{self.update_time_s * 1e3:.2f}',
                  'priority': self.niceness, 'adapt': self.params.adapt,
                  'fallbacks': st['fallbacks'],
                  'rls_ridge': f'{self.learner.rls_ridge_in_use:g}',
                  'payload_updates': st['payload_updates'],
                  'payload_resets': st['payload_resets'],
                  'payload_mass_kg': f'{payload_mass(self.learner.published_spec):.3f}'}
        self._diag_pub.publish(diagnostics(self, 'invdyn: trainer', values, self.reject,
                                           message='learning'))

    def destroy_node(self) -> None:
        self._stop.set()
        self._worker.join(timeout=2.0)
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        super().destroy_node()


def main(args=None) -> int:
    init_ros(args)
    node = None
    executor = None
    try:
        node = TrainerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParamError as e:
        print(f'[trainer] invalid parameters: {e}', flush=True)
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
