"""The scheduler's metrics: the release-to-answer histogram with the TRT as a bucket
edge, failures by reason, and the latency of DUIS and JSON requests, parsed back."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from scheduler.book import RequestBook
from scheduler.requests import ActivationRequest, RequestState
from tests.scheduler.served import Served

TRT = 432_000.0


def _answered(i: int, took: float, state: RequestState = RequestState.DONE) -> ActivationRequest:
    return ActivationRequest(
        request_id=i, user=1, campaign="c", device_id=i, firmware_hash=b"\0" * 32,
        file_version=2, large=True, submitted_at=0.0, state=state, released_at=100.0,
        completed_at=100.0 + took, trt_met=took <= TRT,
        failure="offline" if state is RequestState.FAILED else None,
    )  # fmt: skip


def test_answers_split_on_the_trt_and_failures_count_by_reason() -> None:
    book = RequestBook(TRT)
    assert TRT in book.answer_seconds.bounds
    for i, took in enumerate((3_600.0, TRT, TRT + 1)):
        book.add(_answered(i + 1, took))
    book.add(_answered(9, 7_200.0, RequestState.FAILED))
    cumulative = dict(book.answer_seconds.cumulative())
    assert cumulative[repr(TRT)] == 3  # 1 h, 2 h and exactly the TRT: met
    assert cumulative["+Inf"] == 4
    assert book.failures == {"offline": 1}
    assert book.trt_counts == {True: 3, False: 1}


def test_json_and_duis_request_latency_is_a_histogram_by_interface() -> None:
    with Served() as served:
        assert requests.get(served.url + "/v1/requests", headers=served.auth, timeout=30).ok
        requests.post(served.url + "/duis", data=b"<x/>", headers=served.auth, timeout=30)
        text = requests.get(served.url + "/metrics", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families["smets1_scheduler_http_request_seconds"]
    assert latency.type == "histogram" and latency.documentation
    counts = {s.labels["api"]: s.value for s in latency.samples if s.name.endswith("_count")}
    assert counts["json"] >= 1 and counts["duis"] >= 1
