"""One subscription taken in a thread of its own, outside the rclpy executor.

Why: rclpy's executors rebuild a wait set of every entity of the node (parameter services,
timers, guard conditions, the subscription) and walk it in Python for every message. Measured
on the 2-core test machine at 1 kHz, a no-op JointState relay spends about 480 us of CPU per
message under SingleThreadedExecutor and about 145 us with a wait set that holds only its
subscription (`invdyn bench e2e` prints the per-process figures). For the predictor, at 1 kHz,
that is the difference between a core kept busy and a third of one.

How: the subscription is created on the node as usual (it shows in `ros2 node info`, QoS and
remappings apply), then taken out of the node's list the executors read, and a thread waits on
a wait set with only that subscription and calls the callback for each message taken. The rest
of the node (services, timers, other subscriptions) stays on the executor, so the callback must
be safe against them (the predictor serialises them with a lock).

It relies on rclpy's C binding (`rclpy.impl.implementation_singleton`), the same calls rclpy's
own executors make (Humble to Kilted); where they are missing, :class:`DedicatedReceiver`
raises RuntimeError saying so and the node keeps the subscription on its executor.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from rclpy.node import Node
from rclpy.subscription import Subscription

#: Longest wait before the thread checks for shutdown [ns].
WAIT_TIMEOUT_NS = 100_000_000


def _binding():
    from rclpy.impl.implementation_singleton import rclpy_implementation
    return rclpy_implementation


def _missing_api(node: Node, subscription: Subscription) -> Optional[str]:
    """Why this rclpy lacks what :class:`DedicatedReceiver` needs; None when it has it."""
    try:
        b = _binding()
        ok = (hasattr(b, 'WaitSet') and hasattr(subscription.handle, 'take_message')
              and subscription in getattr(node, '_subscriptions', ()))
    except Exception as e:  # noqa: BLE001 - any failure means: not available
        return f'rclpy binding not usable: {e}'
    return None if ok else 'this rclpy lacks the wait-set API'


class DedicatedReceiver:
    """Takes ``subscription``'s messages in a thread and calls ``callback(msg)`` for each."""

    def __init__(self, node: Node, subscription: Subscription,
                 callback: Callable[[Any], None], name: str = 'invdyn-receiver') -> None:
        why = _missing_api(node, subscription)
        if why is not None:
            raise RuntimeError(why)
        self._node = node
        self._sub = subscription
        self._callback = callback
        # Out of the executor's sight: it must not wait on (and take from) it too, nor on its
        # QoS event handlers, which share its handle.
        node._subscriptions.remove(subscription)
        for handler in getattr(subscription, 'event_handlers', ()):
            node.remove_waitable(handler)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Exceptions raised by the callback (logged, the thread carries on).
        self.errors = 0

    @property
    def native_id(self):
        return self._thread.native_id

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        b = _binding()
        sub = self._sub
        ws = b.WaitSet(1, 0, 0, 0, 0, 0, self._node.context.handle)
        take, msg_type, raw = sub.handle.take_message, sub.msg_type, sub.raw
        try:
            with sub.handle:
                while not self._stop.is_set():
                    ws.clear_entities()
                    ws.add_subscription(sub.handle)
                    ws.wait(WAIT_TIMEOUT_NS)
                    while not self._stop.is_set():
                        taken = take(msg_type, raw)
                        if taken is None:
                            break
                        try:
                            self._callback(taken[0])
                        except Exception as e:  # noqa: BLE001 - one bad message, not the node
                            self.errors += 1
                            self._node.get_logger().error(
                                f'joint_states callback failed: {e!r}',
                                throttle_duration_sec=5.0)
        except Exception as e:  # noqa: BLE001 - the context went down under the wait
            if not self._stop.is_set():
                self._node.get_logger().error(f'receiver stopped: {e!r}')

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, then destroy the subscription (the node no longer lists it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        try:
            self._sub.destroy()
        except Exception:  # noqa: BLE001 - already gone with the context
            pass
