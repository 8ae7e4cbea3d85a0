"""`smets1 run`: one process, virtual clock, in-process bus, the whole firmware path.

It wires the roles together in one process (fleet ← bus → DCO ← scheduler), drives the
config's campaigns (orchestrator.campaign) and writes the summary (scheduler.summary plus
what the fleet, the DCO and the bus counted) and the report.

Users' `callback_url`s are not called here: on the virtual clock's loop an HTTP timeout
would expire while the socket waits in real time. Every notification is still stored in
the run's state directory (`scheduler.sqlite`); `smets1 scheduler` delivers callbacks.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from dco_mock.service import Dco
from emulator.device import Esme
from emulator.flash_journal import FlashJournal
from emulator.fleet import FleetHost, build_devices
from emulator.slots import FlashStore
from orchestrator.campaign import (
    build_scheduler,
    campaign_batches,
    campaign_devices,
    campaign_summary,
    devices_by_model,
    make_images,
    submit_campaign,
)
from orchestrator.gate import Thresholds, gate, thresholds_of
from orchestrator.report import write_report
from orchestrator.run_info import run_info, write_run_info
from orchestrator.run_metrics import serve_run_metrics
from orchestrator.verdict import verdict
from scheduler.requests import OPEN_STATES, RequestState
from scheduler.service import Scheduler
from smets1.bus import InProcessBus
from smets1.clock import Clock, VirtualClock, to_datetime, wall_seconds
from smets1.config import CampaignConfig, FleetConfig
from smets1.heap import built_to_last, collector_for_a_run
from smets1.lateness import lateness_threshold_seconds

#: States a request ends in.
FINAL_STATES = tuple(s for s in RequestState if s not in OPEN_STATES)
#: How often, in simulated seconds, the progress line is considered for printing.
PROGRESS_TICK_SECONDS = 900.0
#: The least wall time between two progress lines.
PROGRESS_WALL_SECONDS = 1.0


def peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Run:
    """One run of a fleet config: builds every part, drives the campaigns, sums up."""

    def __init__(
        self,
        config: FleetConfig,
        out_dir: Path,
        progress: TextIO | None = sys.stderr,
        flash_dir: Path | None = None,
        metrics_port: int | None = None,
    ):
        self.config = config
        #: Where /metrics is served while the run goes on (None: not served).
        self.metrics_port = metrics_port
        self.out_dir = out_dir
        #: Where the fleet keeps its flash (emulator.flash_journal); None: in RAM only.
        self.flash_dir = flash_dir
        self.progress = progress
        self.clock: Clock = VirtualClock(config.epoch_seconds)

    def execute(self) -> dict[str, Any]:
        wall0 = wall_seconds()
        with collector_for_a_run():
            summary = self.clock.run(self._main(wall0))
        summary["wall_seconds"] = round(wall_seconds() - wall0, 3)
        summary["peak_rss_bytes"] = peak_rss_bytes()
        return summary

    async def _main(self, wall0: float) -> dict[str, Any]:
        cfg = self.config
        state_dir = self.out_dir / "state"
        shutil.rmtree(state_dir, ignore_errors=True)
        images = make_images(cfg)
        bus = InProcessBus()
        flash = FlashStore()
        devices = build_devices(cfg, flash=flash)
        journal = None
        if self.flash_dir is not None:
            journal = FlashJournal.open(self.flash_dir, devices, flash, fleet=cfg.name)
        try:
            with built_to_last():
                return await self._campaigns(wall0, state_dir, images, bus, devices, journal)
        finally:
            if journal is not None:
                journal.close()

    async def _campaigns(
        self,
        wall0: float,
        state_dir: Path,
        images: dict[str, bytes],
        bus: InProcessBus,
        devices: dict[int, Esme],
        journal: FlashJournal | None,
    ) -> dict[str, Any]:
        cfg = self.config
        host = FleetHost(self.clock, bus, cfg.name, devices, journal=journal)
        dco = Dco(
            self.clock,
            bus,
            cfg.name,
            1,
            cfg.dco,
            state_dir=state_dir,
            block_size=cfg.block_size_bytes,
        )
        by_model = devices_by_model(cfg)
        scheduler = build_scheduler(cfg, self.clock, dco, state_dir, by_model)
        host.start()
        dco.start()
        started = self.clock.now()
        background = None
        if cfg.background is not None:
            background = dco.carry_background(
                cfg.background, cfg.device_spans(), cfg.seed, cfg.scheduler.peak_timezone
            )
            background.start()
        server = (
            serve_run_metrics(self.metrics_port, self.clock, scheduler, dco, host)
            if self.metrics_port is not None
            else None
        )

        async def submit(c: CampaignConfig) -> None:
            ids = campaign_devices(c, by_model, cfg)
            for at, batch, batch_ids in campaign_batches(c, ids):
                await self.clock.sleep_until(started + at)
                await submit_campaign(scheduler, batch, images[c.image], batch_ids)

        if self.progress is not None and any(u.callback_url for u in scheduler.users.values()):
            self.progress.write(
                "note: callback_url is not called under smets1 run (virtual clock); "
                "notifications are kept in the state directory\n"
            )
        releaser = asyncio.create_task(scheduler.run(deliver_callbacks=False))
        ticker = asyncio.create_task(self._progress(scheduler, host, wall0))
        try:
            await asyncio.gather(*(submit(c) for c in cfg.campaigns))
            await scheduler.wait_idle()
        finally:
            if background is not None:
                background.stop()
            for task in (releaser, ticker):
                task.cancel()
            await asyncio.gather(releaser, ticker, return_exceptions=True)
            if server is not None:
                server.stop()
            await scheduler.close()
            await dco.close()
            await bus.close()
            host.flush()
        simulated = self.clock.now() - started
        summary = self._summary(scheduler, host, dco, bus, simulated, images)
        if background is not None:
            summary["background"] = background.summary()
        return summary

    async def _progress(self, scheduler: Scheduler, host: FleetHost, wall0: float) -> None:
        last = wall0
        while True:
            await self.clock.sleep(PROGRESS_TICK_SECONDS)
            now = wall_seconds()
            if self.progress is None or now - last < PROGRESS_WALL_SECONDS:
                continue
            last = now
            self.progress.write(self._progress_line(scheduler, now - wall0) + "\n")
            self.progress.flush()

    def _progress_line(self, scheduler: Scheduler, wall: float) -> str:
        states = scheduler.state_counts
        total = len(scheduler.requests)
        done = states[RequestState.DONE]
        return (
            f"[{to_datetime(self.clock.now()):%Y-%m-%d %H:%M} sim | {wall:6.1f}s wall] "
            f"activated {done}/{total}, failed {states[RequestState.FAILED]}, "
            f"in flight {states[RequestState.RELEASED]}, waiting {states[RequestState.WAITING]}, "
            f"held {states[RequestState.HELD]}; {progress_estimate(states, total, wall)}"
        )

    def _summary(
        self,
        scheduler: Scheduler,
        host: FleetHost,
        dco: Dco,
        bus: InProcessBus,
        simulated: float,
        images: dict[str, bytes],
    ) -> dict[str, Any]:
        campaign = campaign_summary(scheduler, self.config, simulated, images)
        # One process on a virtual clock: every frame and timer is handled at the
        # simulated instant it was due, so nothing is late and the run is valid.
        lateness = {
            "worst_seconds": 0.0,
            "p99_seconds": 0.0,
            "samples": 0,
            "threshold_seconds": lateness_threshold_seconds(self.config),
            "roles": {},
        }
        return {
            **campaign.model_dump(),
            "devices": len(host.devices),
            "blocks_delivered": host.counters.blocks_received,
            "bytes_delivered": host.counters.block_bytes_received,
            "blocks_sent": dco.counters.blocks_sent,
            "bytes_sent": dco.counters.bytes_sent,
            "transfer_rounds": dco.counters.rounds,
            "device_states": dict(sorted(host.state_counts().items())),
            "device_transitions": dict(sorted(host.transitions().items())),
            "faults": dict(sorted(host.counters.faults.items())),
            "frames_dropped": dict(sorted(host.counters.frames_dropped.items())),
            "dco_pipe": None if dco.pipe is None else dco.pipe.summary(),
            "dco_retries": dco.counters.retries,
            "dco_resumes": dco.counters.resumes,
            "dco_stray_frames": dco.counters.stray_frames,
            "bus": {
                "messages": bus.counters.messages_published,
                "bytes": bus.counters.bytes_published,
            },
            "lateness": lateness,
            "verdict": verdict(lateness, campaign.failed, campaign.trt_missed),
        }


def progress_estimate(states: Mapping[RequestState, int], total: int, wall: float) -> str:
    """How far the requests are (answered, of those submitted so far) and the wall time
    left at the pace so far."""
    settled = sum(states[s] for s in FINAL_STATES)
    if not total:
        return "0 % answered"
    share = settled / total
    if share <= 0:
        return "0 % answered"
    left = wall * (1 - share) / share
    return f"{100 * share:.1f} % answered, about {left:,.0f} s left"


def run_config(
    config: FleetConfig,
    out_dir: Path,
    progress: TextIO | None = sys.stderr,
    flash_dir: Path | None = None,
    thresholds: Thresholds | None = None,
    config_file: Path | None = None,
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """Run a config and write `summary.json`, `run.json` and the report (with
    `failed_devices.csv`) into `out_dir`; with `flash_dir`, the fleet's flash is kept
    there (and resumed from it, if it holds the same fleet). `thresholds` (default: the
    config's) decide the summary's `gate` (orchestrator.gate); `config_file` is the file
    the config was read from (the report shows it); with `metrics_port`, Prometheus
    /metrics is served there while the run goes on (orchestrator.run_metrics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(config, out_dir, progress, flash_dir, metrics_port)
    summary = run.execute()
    summary["gate"] = gate(summary, thresholds or thresholds_of(config))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_run_info(out_dir, run_info(config, config_file))
    write_report(out_dir)
    return summary
