"""The image installs the versions the tests ran with (constraints.txt), runs as a
numeric non-root user whose only writable place is /state, and has no broker in it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not name==version"
            pins[_name(name)] = version
    return pins


def test_every_dependency_is_pinned_and_the_tests_run_on_the_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = _pins()
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert not missing, f"not in constraints.txt: {missing}"
    differ = {}
    for name, version in pins.items():
        installed = metadata.version(name)
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"pinned, installed: {differ} (make setup installs the pins)"


def test_the_image_and_make_setup_install_from_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M)
    [install] = re.findall(r"^RUN pip install .*$", dockerfile, re.M)
    assert "-c constraints.txt" in install
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in makefile
    assert re.search(r"^\$\(STAMP\): .*constraints\.txt", makefile, re.M)


def test_the_image_runs_as_a_numeric_user_that_owns_its_working_folder() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and re.fullmatch(r"\d+:\d+", user[-1]), user
    uid_gid = user[-1]
    workdir = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)[-1]
    assert re.search(rf"chown {uid_gid} {re.escape(workdir)}\b", dockerfile)
    assert re.search(rf"^ENV HOME={re.escape(workdir)}$", dockerfile, re.M)
    # No broker in the image: the roles take one by URL.
    assert not re.search(r"apt-get install.*mosquitto", dockerfile)
