"""QoS profiles of the node's subscriptions and its incompatible-QoS event hook."""
from __future__ import annotations

from typing import Any, Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def qos_events(on_incompatible: Callable[[Any], None]) -> Any:
    """SubscriptionEventCallbacks with an incompatible-QoS callback (rclpy ≥ Iron: event_handler;
    Humble: qos_event)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:                                     # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef]
    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def reliable(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def best_effort(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)
