from __future__ import annotations

import argparse

import pytest

from orchestrator.cli import main
from orchestrator.roles_cli import add_role_commands, shard_from_host


def test_a_statefulset_pod_name_gives_the_shard() -> None:
    assert shard_from_host("fleet-12") == 12
    assert shard_from_host("laptop") is None


def test_every_role_is_registered() -> None:
    parser = argparse.ArgumentParser(prog="smets1")
    add_role_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fleet", "c.yaml", "--shard", "1", "--shards", "4"])
    assert (args.command, args.shard, args.shards) == ("fleet", 1, 4)
    args = parser.parse_args(["scheduler", "c.yaml", "--dco", "http://a", "--dco", "http://b"])
    assert args.dco == ["http://a", "http://b"]
    assert parser.parse_args(["dco", "c.yaml"]).worker == "w0"


def test_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "/nonexistent.yaml", "--shard", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smets1: error: ") and "Traceback" not in err
