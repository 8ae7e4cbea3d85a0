"""`smets1 run --metrics-port N`: the metrics every role serves, from the one process.

The in-process run has no HTTP server of its own (its event loop runs on the virtual
clock, where a socket's timeouts would mean nothing), so prometheus-client's own server
answers /metrics from a thread: the scheduler's collector (scheduler.metrics), the DCO's
and the fleet's counters, the run's clock, and the process's CPU and memory. Each scrape
reads the counters as they stand; nothing is copied between scrapes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from dco_mock.metrics import DCO_METRICS
from dco_mock.service import Dco
from emulator.fleet import FleetHost
from emulator.metrics import FLEET_METRICS
from orchestrator.errors import OrchestratorError
from scheduler.metrics import SchedulerCollector
from scheduler.service import Scheduler
from smets1.clock import Clock
from smets1.metrics import Metric, role_registry, sampler

RUN_CLOCK_METRICS: tuple[Metric[Clock], ...] = (
    Metric(
        "gauge",
        "clock_simulated_seconds",
        "Simulated time of the run's clock, Unix seconds",
        lambda c: c.now(),
    ),
    Metric(
        "gauge",
        "clock_lag_simulated_seconds",
        "How far the process runs behind its clock, simulated seconds (a virtual clock: 0)",
        lambda c: 0.0,
    ),
)


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve_run_metrics(
    port: int, clock: Clock, scheduler: Scheduler, dco: Dco, host: FleetHost
) -> MetricsServer:
    registry = role_registry(
        "run",
        [
            sampler(clock, RUN_CLOCK_METRICS),
            sampler(dco, DCO_METRICS),
            sampler(host, FLEET_METRICS),
        ],
    )
    registry.register(SchedulerCollector(scheduler))
    try:
        server, thread = start_http_server(port, registry=registry)
    except OSError as exc:
        raise OrchestratorError(f"--metrics-port {port}: {exc.strerror or exc}") from None
    return MetricsServer(server, thread)
