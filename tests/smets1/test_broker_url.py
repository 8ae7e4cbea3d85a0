from __future__ import annotations

import pytest

from smets1.broker_url import BrokerUrl, parse_broker_url
from smets1.errors import ConfigError


def test_plain_url_with_defaults() -> None:
    assert parse_broker_url("mqtt://broker") == BrokerUrl("broker", 1883)


def test_tls_user_password_and_options() -> None:
    b = parse_broker_url("mqtts://fleet:p%40ss%3Aword@mq.example:9883?ca=/etc/ca.pem&insecure=1")
    assert (b.host, b.port, b.tls) == ("mq.example", 9883, True)
    assert (b.username, b.password) == ("fleet", "p@ss:word")
    assert (b.ca_file, b.tls_insecure) == ("/etc/ca.pem", True)
    assert "p@ss" not in str(b) and str(b) == "mqtts://fleet:***@mq.example:9883"


def test_mqtts_default_port() -> None:
    assert parse_broker_url("mqtts://h").port == 8883


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:1883", "scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "bad port"),
        ("mqtt://h/x", "path"),
        ("mqtts://h?cert=x", "unknown option"),
        ("mqtt://h?ca=x", "need mqtts"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_broker_url(url)
