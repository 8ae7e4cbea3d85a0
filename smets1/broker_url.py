"""A broker named by URL: `mqtt://user:pass@host:port` or `mqtts://...` for TLS.

    mqtt://127.0.0.1:1883            plain TCP (default port 1883)
    mqtts://broker.example:8883      TLS with the system's CA store (default port 8883)
    mqtts://host?ca=/etc/ca.pem      TLS with a CA file; `insecure=1` skips the host check

User name and password are percent-decoded, so a password may hold `@` or `:` as `%40`, `%3A`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from smets1.errors import ConfigError

MQTT_PORT = 1883
MQTTS_PORT = 8883


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    tls_insecure: bool = False

    def __str__(self) -> str:
        """The URL without the password, fit for a log line."""
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def _without_password(url: str) -> str:
    """The URL as an error message may show it: a password in it becomes ***."""
    return re.sub(r"(//[^/?#@:]*:)[^/?#@]*@", r"\1***@", url)


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL; a bad one raises ConfigError naming what is wrong (the URL
    shown without its password)."""
    try:
        return _parse(url)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(repr(url), repr(_without_password(url)))) from None


def _parse(url: str) -> BrokerUrl:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for mqtt://[::1
        raise ConfigError(f"broker URL {url!r}: {exc}; expected mqtt://host:port") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r}: no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r}: bad port ({exc}); expected 1-65535") from None
    if port is None:
        port = MQTTS_PORT if tls else MQTT_PORT
    elif port == 0:
        raise ConfigError(f"broker URL {url!r}: bad port 0; expected 1-65535")
    if parts.path not in ("", "/"):
        raise ConfigError(f"broker URL {url!r}: a path is not allowed, got {parts.path!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "insecure"}
    if unknown:
        raise ConfigError(f"broker URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    if query and not tls:
        raise ConfigError(f"broker URL {url!r}: ca= and insecure= need mqtts://")
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ca_file=query.get("ca"),
        tls_insecure=query.get("insecure", "0") in ("1", "true", "yes"),
    )
