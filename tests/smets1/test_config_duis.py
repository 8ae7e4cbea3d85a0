"""The DUIS signing config (`scheduler.users[].certificate`, `scheduler.duis`): a file that
cannot be used is a config error naming the file, the line, the field and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from smets1.config import load_config
from smets1.errors import ConfigError
from tests.factories import tiny_config
from tests.xml_identities import make_identity

SUPPLIER = "90-B3-D5-1F-30-01-00-00"


def _write(tmp_path: Path, scheduler: dict[str, Any]) -> tuple[Path, str]:
    text = yaml.safe_dump(tiny_config(scheduler=scheduler), sort_keys=False)
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path, text


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def _error(tmp_path: Path, scheduler: dict[str, Any]) -> tuple[str, str, Path]:
    path, text = _write(tmp_path, scheduler)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value), text, path


def test_relative_paths_resolve_against_the_config_and_load(tmp_path: Path) -> None:
    make_identity(tmp_path / "keys", "supplier")
    dcc = make_identity(tmp_path / "keys", "dcc")
    path, _ = _write(
        tmp_path,
        {
            "users": [{"id": SUPPLIER, "token": "t", "certificate": "keys/supplier.pem"}],
            "duis": {"signing_key": "keys/dcc.key", "signing_certificate": "keys/dcc.pem"},
        },
    )
    cfg = load_config(path)
    assert cfg.scheduler.users[0].certificate == tmp_path / "keys" / "supplier.pem"
    assert cfg.scheduler.duis.signing_certificate == dcc.cert_path
    assert cfg.scheduler.duis.require_signature is None  # decided by the certificates


def test_a_certificate_that_is_not_pem_names_the_user_field_and_line(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    msg, text, path = _error(
        tmp_path, {"users": [{"id": SUPPLIER, "token": "t", "certificate": "junk.pem"}]}
    )
    assert msg.startswith(
        f"{path}:{_line(text, 'certificate: junk.pem')}: scheduler.users.0.certificate: "
    ), msg
    assert "is not a PEM X.509 certificate" in msg and "\n" not in msg


def test_a_missing_key_file_and_a_mismatched_pair_name_their_fields(tmp_path: Path) -> None:
    dcc = make_identity(tmp_path, "dcc")
    other = make_identity(tmp_path, "other")
    msg, text, _ = _error(
        tmp_path,
        {"duis": {"signing_key": "nowhere.key", "signing_certificate": str(dcc.cert_path)}},
    )
    assert f":{_line(text, 'signing_key')}: scheduler.duis.signing_key: cannot read" in msg
    assert "No such file" in msg
    msg, text, _ = _error(
        tmp_path,
        {
            "duis": {
                "signing_key": str(other.key_path),
                "signing_certificate": str(dcc.cert_path),
            }
        },
    )
    assert f":{_line(text, 'signing_key')}: scheduler.duis.signing_key: " in msg
    assert "does not match the certificate" in msg


def test_a_key_without_its_certificate_and_a_p384_key_are_refused(tmp_path: Path) -> None:
    dcc = make_identity(tmp_path, "dcc")
    msg, _, _ = _error(tmp_path, {"duis": {"signing_key": str(dcc.key_path)}})
    assert "scheduler.duis.signing_certificate: give both" in msg
    big = make_identity(tmp_path, "p384", curve=ec.SECP384R1())
    msg, _, _ = _error(
        tmp_path,
        {
            "duis": {
                "signing_key": str(big.key_path),
                "signing_certificate": str(big.cert_path),
            }
        },
    )
    assert "scheduler.duis.signing_key: " in msg and "expected an EC P-256" in msg
    assert "scheduler.duis.signing_certificate: " in msg


def test_two_users_with_one_certificate_and_a_schema_dir_without_the_schema(
    tmp_path: Path,
) -> None:
    shared = make_identity(tmp_path, "shared")
    users = [
        {"id": SUPPLIER, "token": "t1", "certificate": str(shared.cert_path)},
        {
            "id": "90-B3-D5-1F-30-FF-00-00",
            "token": "t2",
            "service_desk": True,
            "certificate": str(shared.cert_path),
        },
    ]
    msg, _, _ = _error(tmp_path, {"users": users, "duis": {"schema_dir": str(tmp_path)}})
    assert "scheduler.users.1.certificate: the certificate of users.0 too" in msg
    assert "scheduler.duis.schema_dir: " in msg and "has no 'DUIS Schema V5.1.xsd'" in msg
