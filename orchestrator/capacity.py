"""`smets1 capacity CONFIG`: the most large images a day the emulated system sustains
while its background traffic stays within its target.

A trial at rate N runs the config as `smets1 run` does, with the scheduler's daily
capacity (`scheduler.large_images_per_day`) set to N and everything else as configured
(the fleet, its links, the DCO's concurrent transfers, the background traffic, the
release policy, the seed), in an OS process of its own. The rate is *sustained* when

* the day with the most large images released reached N (at least `REACHED_SHARE` of
  it, or of every request the campaigns make when there are fewer): the DCO and the
  links kept up, or the scheduler's backpressure held releases back;
* no request missed its five-day TRT, none failed for a reason the rate caused
  (`offline` while devices were healthy is the DCO giving up on a crowded link);
* background requests missed their targets (or went unanswered) at no more than
  `--max-miss-rate` of them.

A higher rate only loads the devices' links and the DCO more, so the search assumes
that a rate above one that failed fails too: it runs the lowest and the highest rate
first (side by side), then, each round, as many rates between the highest sustained and
the lowest failed as there are cores, until they are `--resolution` apart. Each
trial's folder (`OUT/rate-N/`) holds its summary and report; `OUT/capacity.json` has
every trial and the answer.

The campaigns decide the rates a trial can show: a User without an agreed schedule is
held to 500 a day by MP230, and a fleet of D devices in campaigns cannot show more than
D in a day. Campaigns with `schedule: agreed` over enough devices test the system, not
the rule (fleet_configs/demo.yaml's do, for 12,000).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smets1.config import FleetConfig, load_config
from smets1.errors import ConfigError

#: Share of the rate the busiest day's releases must reach for the rate to count.
REACHED_SHARE = 0.98
#: Failure reasons a crowded system causes (a healthy device's link too busy to answer).
LOAD_FAILURES = ("offline", "incomplete", "timeout")


@dataclass(frozen=True, slots=True)
class Trial:
    """One rate, run: what happened and whether it was sustained (and if not, why)."""

    rate: int
    requests: int
    activated: int
    busiest_day: int
    trt_missed: int
    load_failures: int
    background_requests: int
    background_missed: int
    background_miss_rate: float | None
    background_p95_seconds: float | None
    simulated_days: float
    sustained: bool
    reason: str


def with_rate(config: FleetConfig, rate: int) -> FleetConfig:
    """The config with its daily capacity of large images set to `rate`."""
    scheduler = config.scheduler.model_copy(update={"large_images_per_day": rate})
    return config.model_copy(update={"scheduler": scheduler, "name": f"{config.name}-{rate}"})


def judge(rate: int, summary: dict[str, Any], max_miss_rate: float) -> Trial:
    """A trial's verdict from its run's summary."""
    per_day = summary.get("large_images_released_per_day") or {}
    busiest = max(per_day.values(), default=0)
    requests = int(summary["requests"])
    failed = summary.get("failed") or {}
    load_failures = sum(int(failed.get(r, 0)) for r in LOAD_FAILURES)
    bg = summary.get("background") or {}
    bg_requests = int(bg.get("requests", 0))
    bg_missed = int(bg.get("missed", 0)) + int(bg.get("unanswered", 0))
    miss_rate = bg_missed / bg_requests if bg_requests else None
    reasons = []
    wanted = min(rate, requests)
    if busiest < REACHED_SHARE * wanted:
        reasons.append(f"busiest day released {busiest:,} of {wanted:,}")
    if summary.get("trt_missed"):
        reasons.append(f"TRT missed {summary['trt_missed']:,}")
    if load_failures:
        reasons.append(f"failed under load {load_failures:,}")
    if miss_rate is not None and miss_rate > max_miss_rate:
        reasons.append(f"background missed {miss_rate:.2%} (over {max_miss_rate:.2%})")
    return Trial(
        rate=rate,
        requests=requests,
        activated=int(summary["images_activated"]),
        busiest_day=busiest,
        trt_missed=int(summary.get("trt_missed") or 0),
        load_failures=load_failures,
        background_requests=bg_requests,
        background_missed=bg_missed,
        background_miss_rate=None if miss_rate is None else round(miss_rate, 6),
        background_p95_seconds=bg.get("p95_seconds"),
        simulated_days=float(summary["simulated_days"]),
        sustained=not reasons,
        reason="; ".join(reasons) or "sustained",
    )


def run_trial(config_file: str, rate: int, out_dir: str, max_miss_rate: float) -> Trial:
    """Run the config at `rate` a day into `out_dir`: the worker of `find_capacity`."""
    from orchestrator.runner import run_config

    config = with_rate(load_config(config_file), rate)
    summary = run_config(config, Path(out_dir), progress=None, config_file=Path(config_file))
    return judge(rate, summary, max_miss_rate)


def check(config: FleetConfig, low: int, high: int, resolution: int) -> None:
    """ConfigError, one line, for a search that cannot say anything."""
    if config.background is None:
        raise ConfigError(
            "capacity: the config has no `background` section; the answer is the most large"
            " images a day that keep background misses under --max-miss-rate, so add one"
            " (`background: {}` for the defaults; README, Background traffic)"
        )
    if not 1 <= low < high:
        raise ConfigError(f"capacity: expected 1 <= --low < --high, got {low} and {high}")
    if resolution < 1:
        raise ConfigError(f"capacity: --resolution must be at least 1, got {resolution}")


def _between(lo: int, hi: int, n: int) -> list[int]:
    """Up to `n` whole rates evenly spread strictly between `lo` and `hi`."""
    points = {lo + (hi - lo) * (i + 1) // (n + 1) for i in range(n)}
    return sorted(p for p in points if lo < p < hi)


def find_capacity(
    config_file: Path,
    out: Path,
    *,
    low: int = 500,
    high: int | None = None,
    max_miss_rate: float = 0.01,
    resolution: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Search the rates from `low` to `high` (default: the config's devices) and return
    the trials and the answer: the highest rate sustained (None if not even `low`)."""
    config = load_config(config_file)
    top = high if high is not None else config.device_count
    step = resolution if resolution is not None else max(1, top // 50)
    check(config, low, top, step)
    out.mkdir(parents=True, exist_ok=True)
    n = max(1, workers or os.cpu_count() or 1)
    trials: dict[int, Trial] = {}
    ctx = multiprocessing.get_context("spawn")
    # One OS process a trial, at most `n` at once, each a fresh interpreter.
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, max_tasks_per_child=1) as pool:

        def run(rates: Sequence[int]) -> None:
            futures = [
                pool.submit(run_trial, str(config_file), r, str(out / f"rate-{r}"), max_miss_rate)
                for r in rates
            ]
            for f in futures:
                t = f.result()
                trials[t.rate] = t

        run([low, top])
        lo, hi = low, top
        if trials[top].sustained:
            lo = hi = top
        elif not trials[low].sustained:
            hi = lo = 0
        while hi - lo > step:
            rates = _between(lo, hi, n)
            if not rates:
                break
            run(rates)
            for r in rates:
                if trials[r].sustained:
                    lo = max(lo, r)
            hi = min([r for r in rates if not trials[r].sustained and r > lo] + [hi])
    answer = lo if lo and trials.get(lo) is not None and trials[lo].sustained else None
    result = {
        "config": config.name,
        "config_file": str(config_file),
        "seed": config.seed,
        "devices": config.device_count,
        "max_miss_rate": max_miss_rate,
        "low": low,
        "high": top,
        "resolution": step,
        "capacity": answer,
        "first_failed": None
        if answer == top
        else min((r for r, t in trials.items() if not t.sustained), default=None),
        "trials": [asdict(trials[r]) for r in sorted(trials)],
    }
    (out / "capacity.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def render(result: dict[str, Any]) -> str:
    """The trials as a table, then the answer, as `smets1 capacity` prints them."""
    lines = [
        f"{'rate/day':>9} {'busiest day':>11} {'activated':>10} {'TRT missed':>10}"
        f" {'bg requests':>11} {'bg missed':>10} {'bg p95 s':>9}  verdict"
    ]
    for t in result["trials"]:
        rate = t["background_miss_rate"]
        p95 = t["background_p95_seconds"]
        missed = "-" if rate is None else f"{rate:.2%}"
        late = "-" if p95 is None else f"{p95:.1f}"
        lines.append(
            f"{t['rate']:>9,} {t['busiest_day']:>11,} {t['activated']:>10,}"
            f" {t['trt_missed']:>10,} {t['background_requests']:>11,}"
            f" {missed:>10} {late:>9}"
            f"  {t['reason']}"
        )
    cap = result["capacity"]
    bound = f"background misses at most {result['max_miss_rate']:.2%}"
    if cap is None:
        lines.append(f"capacity: not even {result['low']:,} a day is sustained ({bound})")
    elif cap == result["high"]:
        lines.append(
            f"capacity: at least {cap:,} large images a day, the top of the search ({bound});"
            " a larger fleet or --high would look further"
        )
    else:
        lines.append(
            f"capacity: {cap:,} large images a day ({bound}); {result['first_failed']:,} was not"
            f" sustained (searched to within {result['resolution']:,})"
        )
    return "\n".join(lines)
