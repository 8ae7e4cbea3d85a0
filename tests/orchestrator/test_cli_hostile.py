"""Every `smets1` subcommand, every flag, hostile values: exit 2 with one line, never a
traceback (issue 10, item 10).

The sweep walks the parser itself, so a flag added later is swept too. Each command gets
a base command line that would otherwise do nothing harmful: the roles and `run` name a
config that does not exist (so an accepted value still ends at "cannot read"), and
`image` commands work in the test's temp folder.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main
from tests.factories import tiny_config

ROOT = Path(__file__).resolve().parents[2]

#: What a hostile user or a broken deployment passes. No NUL: argv and the environment
#: cannot hold one.
HOSTILE = [
    "",
    "0",
    "-1",
    "70000",
    "4294967296",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "four",
    "9" * 5000,
    "0x" + "f" * 40,
    "mqtt://[::1",
    "http://[::1",
    "../../x",
    "/",
    "a/b#+",
    "é\udcff",
    "/dev/zero",  # endless: read no further than a limit
]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """(command words, its parser) for every leaf subcommand."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, (*prefix, name))
    return out or [(prefix, parser)]


def _base(words: tuple[str, ...], tmp: Path) -> list[str]:
    """A command line for `words` that needs only the flag under test to go wrong."""
    missing = str(tmp / "absent.yaml")
    image = tmp / "ok.ota"
    if words == ("image", "build"):
        return [*words, "--manufacturer", "1", "--image-type", "1", "--file-version", "1",
                "--body-size", "16", "-o", str(tmp / "out.ota")]  # fmt: skip
    if words in (("image", "inspect"), ("image", "verify")):
        return [*words, str(image)]
    if words == ("image", "validate"):
        return [*words, str(image), "--model", "acme-e1"]
    if words == ("image", "plan"):
        return [*words, str(image), "--devices", "2", "--other-users", "0"]
    if words == ("image", "trial"):
        return [*words, str(image), "--model", "acme-e1", "--devices", "2"]
    if words == ("image", "keygen"):
        return [*words, "-o", str(tmp / "key.pem"), "--force"]
    return [*words, missing]


#: Options that name something to write: never given an absolute path here (as root, a
#: build "written beside the target then renamed" over /dev/zero would replace it).
WRITES = {"output", "out", "state_dir"}


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, list[str]]]:
    """The first option string of every optional that takes a value, and the hostile
    values it is given."""
    return [
        (a.option_strings[0], [v for v in HOSTILE if a.dest not in WRITES or v[:1] != "/"])
        for a in parser._actions
        if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)
    ]


def _run(
    parser: argparse.ArgumentParser, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, bool]:
    """Exit status, stderr, and whether argparse itself refused (SystemExit). What `main`
    does, on one parser built once (building it is most of the time of a call)."""
    for stream in (sys.stdout, sys.stderr):  # as main does: escape what is not UTF-8
        stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        args = parser.parse_args(argv)
        rc = int(args.func(args))
        by_argparse = False
    except SystemExit as exc:
        rc = int(exc.code or 0)
        by_argparse = True
    return rc, capsys.readouterr().err, by_argparse


def _assert_clean(argv: list[str], rc: int, err: str, by_argparse: bool) -> None:
    assert "Traceback" not in err, (argv, err)
    assert rc in (0, 1, 2), (argv, rc, err)
    if rc == 2:
        lines = err.strip().splitlines()
        if by_argparse:  # usage, then one line naming the argument
            assert lines[-1].startswith("smets1") and "error: " in lines[-1], (argv, err)
        else:
            assert lines and all(line.startswith("smets1: error: ") for line in lines), err


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    assert main(["image", "build", "--manufacturer", "0x1234", "--image-type", "1",
                 "--file-version", "2", "--body-size", "100", "-o", str(tmp_path / "ok.ota")]
                ) == 0  # fmt: skip
    return tmp_path


def test_every_flag_of_every_subcommand_with_hostile_values(
    image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    # `-o four`, `-o ../../x` and the like write here, inside the test's folder.
    deep = image_dir / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    for name in [k for k in os.environ if k.startswith("SMETS1_")]:
        monkeypatch.delenv(name)
    top = build_parser()
    commands = _commands(top)
    assert {w for w, _ in commands} >= {("run",), ("dco",), ("fleet",), ("scheduler",),
                                        ("distributed",), ("image", "build")}  # fmt: skip
    swept = 0
    for words, parser in commands:
        base = _base(words, image_dir)
        for option, values in _options(parser):
            for value in values:
                argv = [*base, option, value]
                rc, err, by_argparse = _run(top, argv, capsys)
                _assert_clean(argv, rc, err, by_argparse)
                swept += 1
        # Positional arguments (config, file) take the hostile values too.
        for value in HOSTILE:
            argv = [*words, value, *base[len(words) + 1 :]]
            rc, err, by_argparse = _run(top, argv, capsys)
            _assert_clean(argv, rc, err, by_argparse)
    assert swept > 500


def _variables() -> list[str]:
    """Every SMETS1_* variable the command line reads (found in its source, so one added
    later is swept too)."""
    import orchestrator.cli
    import orchestrator.roles_cli

    names: set[str] = set()
    for module in (orchestrator.cli, orchestrator.roles_cli):
        names.update(re.findall(r"SMETS1_[A-Z0-9_]+", Path(module.__file__ or "").read_text()))
    return sorted(names)


def test_every_variable_with_hostile_values(
    image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(image_dir)
    variables = _variables()
    assert {"SMETS1_SHARDS", "SMETS1_SPEED", "SMETS1_BROKER"} <= set(variables)
    for name in variables:
        for value in HOSTILE:
            monkeypatch.setenv(name, value)
            top = build_parser()
            for command in ("dco", "fleet", "scheduler", "distributed", "run"):
                argv = [command, str(image_dir / "absent.yaml")]
                rc, err, by_argparse = _run(top, argv, capsys)
                _assert_clean([f"{name}={value!r}", *argv], rc, err, by_argparse)
                assert rc == 2
        monkeypatch.delenv(name)


# -- each named case of the issue: the message names the flag or variable and expects ---------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fleet", "c.yaml", "--broker", "mqtt://[::1"], "argument --broker: broker URL"),
        (["dco", "c.yaml", "--broker", "mqtt://h:0"], "expected 1-65535"),
        (["dco", "c.yaml", "--port", "70000"], "argument --port: expected 1-65535, got 70000"),
        (["fleet", "c.yaml", "--shards", "0"], "argument --shards: expected 1-1024, got 0"),
        (["fleet", "c.yaml", "--shard", "-1"], "argument --shard: expected 0-1023"),
        (["scheduler", "c.yaml", "--speed", "0"], "argument --speed: expected a number above 0"),
        (["scheduler", "c.yaml", "--speed", "nan"], "argument --speed: expected a finite number"),
        (["scheduler", "c.yaml", "--speed", "1e9"], "argument --speed: expected a speed above 0"),
        (["scheduler", "c.yaml", "--wall0", "-5"], "argument --wall0: expected a Unix time"),
        # Followers take their clock from the scheduler: no speed or wall0 of their own.
        (["dco", "c.yaml", "--wall0", "5"], "unrecognized arguments: --wall0 5"),
        (["fleet", "c.yaml", "--speed", "5"], "unrecognized arguments: --speed 5"),
        (["fleet", "c.yaml", "--clock-wait", "0"], "argument --clock-wait: expected a number"),
        (["clock", "c.yaml", "--speed", "-1"], "argument --speed: expected a number above 0"),
        (["dco", "c.yaml", "--worker", "a/b"], "argument --worker: expected 1-64 letters"),
        (["dco", "c.yaml", "--log-level", "loud"], "argument --log-level: expected one of"),
        (["scheduler", "c.yaml", "--dco", "ftp://x"], "argument --dco: expected http://"),
        (["distributed", "c.yaml", "--dco-workers", "0"], "argument --dco-workers: expected"),
        (["distributed", "c.yaml", "--timeout", "inf"], "argument --timeout: expected a fin"),
        (
            [
                "image",
                "build",
                "--manufacturer",
                "1",
                "--image-type",
                "1",
                "--file-version",
                "1",
                "--body-size",
                "4294967295",
                "-o",
                "x",
            ],
            "argument --body-size: at most 268,435,456",
        ),
    ],
)
def test_bad_flags_name_the_flag_and_what_was_expected(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err.splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize(
    ("variable", "value", "command", "says"),
    [
        ("SMETS1_SHARDS", "four", "fleet", "SMETS1_SHARDS='four': expected a whole number"),
        ("SMETS1_SHARDS", "0", "dco", "SMETS1_SHARDS='0': expected 1-1024, got 0"),
        ("SMETS1_SHARD", "x", "fleet", "SMETS1_SHARD='x': expected a whole number"),
        ("SMETS1_SPEED", "0", "scheduler", "SMETS1_SPEED='0': expected a number above 0"),
        ("SMETS1_CLOCK_WAIT", "soon", "fleet", "SMETS1_CLOCK_WAIT='soon': expected a number"),
        ("SMETS1_SPEED", "fast", "scheduler", "SMETS1_SPEED='fast': expected a number"),
        ("SMETS1_WALL0", "yesterday", "scheduler", "SMETS1_WALL0='yesterday': expected a num"),
        ("SMETS1_BROKER", "mqtt://[::1", "fleet", "SMETS1_BROKER='mqtt://[::1': broker URL"),
        ("SMETS1_DCO_WORKER", "w/0", "dco", "SMETS1_DCO_WORKER='w/0': expected 1-64"),
        ("SMETS1_DCO_URLS", "http://a,nope", "scheduler", "SMETS1_DCO_URLS='http://a,nope'"),
        ("SMETS1_LOG_LEVEL", "chatty", "dco", "SMETS1_LOG_LEVEL='chatty': expected one of"),
    ],
)
def test_bad_environment_names_the_variable(
    variable: str,
    value: str,
    command: str,
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main([command, "c.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("smets1: error: "), err
    assert says in err


def test_speed_zero_in_the_environment_is_not_taken_for_the_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to become 1440 silently (`_env_float(...) or DEFAULT_SPEED`)."""
    monkeypatch.setenv("SMETS1_SPEED", "0")
    assert main(["scheduler", "c.yaml", "--dco", "http://127.0.0.1:1"]) == 2
    assert "SMETS1_SPEED='0'" in capsys.readouterr().err


def test_a_flag_given_wins_over_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SMETS1_SHARDS", "four")
    assert main(["fleet", str(tmp_path / "absent.yaml"), "--shard", "0", "--shards", "2"]) == 2
    assert "cannot read the fleet config" in capsys.readouterr().err


def _write(tmp_path: Path, data: dict) -> Path:
    import yaml

    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_devices_per_process_says_how_many_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_config()
    data["devices"][0]["count"] = 2_500_000
    path = _write(tmp_path, data)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "2,500,000 devices in one process" in err
    assert f"smets1 distributed {path} --shards 3" in err
    assert main(["fleet", str(path), "--shard", "0", "--shards", "2"]) == 2
    err = capsys.readouterr().err
    assert "--shards 2: 2,500,000 devices" in err and "use --shards 3 or more" in err
    assert main(["distributed", str(path), "--shards", "2"]) == 2
    assert "use --shards 3 or more" in capsys.readouterr().err


def test_the_real_entry_point_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """Through the interpreter, as a user runs it: the cases of the issue."""
    data = tiny_config()
    data["devices"][0]["count"] = 1_000_000_000
    config = _write(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMETS1_")}
    cases = [
        (["run", str(config)], {}, f"{config}:"),
        (["fleet", str(config), "--broker", "mqtt://[::1"], {}, "--broker"),
        (["fleet", str(config), "--shard", "0"], {"SMETS1_SHARDS": "four"}, "SMETS1_SHARDS"),
    ]
    for argv, extra, says in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *argv],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and says in proc.stderr.splitlines()[-1]


def test_image_build_never_replaces_what_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The build is written beside its target and renamed over it; over a device (run as
    root, `-o /dev/null`), a FIFO or a folder that would replace it. (A FIFO of the
    test's own stands in for a device: a regression must not cost the machine /dev/null.)"""
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (str(folder), str(fifo)):
        argv = ["image", "build", "--manufacturer", "1", "--image-type", "1",
                "--file-version", "1", "--body-size", "16", "-o", target]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.endswith(f"{target}: exists and is not a regular file; expected a file name\n")
    assert folder.is_dir() and fifo.is_fifo()
