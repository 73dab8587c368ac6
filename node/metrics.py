"""Prometheus metrics of one node, in a registry of its own (never the global default one).

Later services register their counters here; GET /metrics renders the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, generate_latest


class NodeMetrics:
    def __init__(self, connected_peers: Callable[[], int], uptime_s: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        Gauge(
            "vivim_connected_peers", "Peers with an open libp2p connection", registry=self.registry
        ).set_function(connected_peers)
        Gauge(
            "vivim_uptime_seconds", "Seconds since the node started", registry=self.registry
        ).set_function(uptime_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
