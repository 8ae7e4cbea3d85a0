"""What stands before the DCO's HTTP API and its call channel: the shared bearer token,
and the bound on the calls served at once (`dco_mock.http_api` checks both for every
request, `dco_mock.call_channel` the bound for every call on a channel)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from smets1.dco_http import RETRY_AFTER_SECONDS
from smets1.metrics import Metric


@dataclass(slots=True)
class Gate:
    """The shared token, and the requests and channel calls in flight."""

    #: The token as bytes, for hmac.compare_digest.
    token: bytes
    #: Requests and channel calls served at once; more are answered 503.
    max_in_flight: int
    in_flight: int = 0
    refused_busy: int = 0
    refused_unauthenticated: int = 0
    #: 11.3s answered 503 because the DCO had no room for them (slots, outbound bytes).
    refused_no_room: int = 0

    def admits(self, authorization: str) -> bool:
        scheme, _, given = authorization.partition(" ")
        # compare_digest takes as long whatever the token sent: a wrong guess tells an
        # attacker nothing about how much of it was right.
        ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self.token)
        return ok and scheme == "Bearer"

    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight

    def busy_message(self) -> str:
        """What a request or call turned away because the DCO is full is told."""
        return (
            f"{self.in_flight} requests in flight, the most this DCO serves at once; "
            f"send again after {RETRY_AFTER_SECONDS} s"
        )


#: What /metrics tells of the gate, beside the DCO's own (dco_mock.metrics).
HTTP_METRICS: tuple[Metric[Gate], ...] = (
    Metric("gauge", "dco_http_requests_in_flight",
           "HTTP requests and channel calls being served", lambda g: g.in_flight),
    Metric("gauge", "dco_http_requests_max_in_flight",
           "HTTP requests and channel calls served at most at once", lambda g: g.max_in_flight),
    Metric("counter", "dco_http_refused_busy",
           "HTTP requests and channel calls answered 503 (Retry-After): too many in flight",
           lambda g: g.refused_busy),
    Metric("counter", "dco_http_refused_unauthenticated",
           "HTTP requests answered 401: no valid bearer token",
           lambda g: g.refused_unauthenticated),
    Metric("counter", "dco_http_refused_no_room",
           "11.3s answered 503 (Retry-After): no free transfer slot or outbound queue full",
           lambda g: g.refused_no_room),
)  # fmt: skip
