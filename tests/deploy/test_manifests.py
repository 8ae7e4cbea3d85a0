"""deploy/ rehearsed offline, as far as that goes without a cluster: the manifests
render (kustomize_lite; and the same with `kubectl kustomize` where kubectl is
installed), validate strictly against a pinned Kubernetes version's schema, and every
command, flag and environment variable they give `smets1` is one it accepts, with the
values each pod gets (its pod index, its Secrets, the run's ConfigMaps)."""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import build_parser
from orchestrator.roles_cli import EXIT_INVALID_RUN, EXIT_USAGE, _resolve_env, expand_urls
from smets1.broker_url import parse_broker_url
from smets1.config import load_config
from smets1.dco_http import check_token
from tests.deploy.kustomize_lite import render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
#: The Kubernetes version whose schema the manifests must meet (kubernetes-validate's).
KUBERNETES_VERSION = "1.32.0"
IMAGE = "smets1-fleet"
#: The smets1 roles' peak RSS as measured (BENCHMARKS.md, issue 11: the demo day over
#: MQTT with backpressure, and its 2,000-device slice), MiB.
MEASURED_MIB = {"dco": 138, "fleet": 215, "scheduler": 102, "mosquitto": 93}
#: What a Secret holds in these checks (the real ones are made by hand: deploy/README.md).
SECRETS = {
    ("smets1-dco", "token"): "0123456789abcdef" * 4,
    ("smets1-mqtt", "username"): "smets1",
    ("smets1-mqtt", "password"): "fedcba9876543210" * 2,
}

Obj = dict[str, Any]


def _objects(folder: Path = DEPLOY) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(folder)}


@pytest.fixture(scope="module")
def objs() -> dict[tuple[str, str], Obj]:
    return _objects()


def _pod(obj: Obj) -> Obj:
    return dict(obj["spec"]["template"]["spec"])


def _workloads(objs: dict[tuple[str, str], Obj]) -> list[Obj]:
    return [o for (kind, _), o in objs.items() if kind in ("StatefulSet", "Job")]


def _containers(objs: dict[tuple[str, str], Obj], *, init: bool = True) -> list[tuple[Obj, Obj]]:
    return [
        (w, c)
        for w in _workloads(objs)
        for c in _pod(w)["containers"] + (_pod(w).get("initContainers", []) if init else [])
    ]


def _smets1(objs: dict[tuple[str, str], Obj]) -> list[tuple[Obj, Obj]]:
    return [(w, c) for w, c in _containers(objs) if c["image"].startswith(IMAGE + ":")]


# -- rendering and the schema --------------------------------------------------------------


def test_the_manifests_render_to_the_run_s_objects(objs: dict[tuple[str, str], Obj]) -> None:
    assert set(objs) == {
        ("ConfigMap", "smets1-run"),
        ("ConfigMap", "smets1-fleet-config"),
        ("ConfigMap", "smets1-prometheus"),
        ("ConfigMap", "mosquitto"),
        ("StatefulSet", "mosquitto"),
        ("Service", "mosquitto"),
        ("StatefulSet", "dco"),
        ("Service", "dco"),
        ("StatefulSet", "fleet"),
        ("Service", "fleet"),
        ("PersistentVolumeClaim", "scheduler-state"),
        ("Job", "scheduler"),
        ("Service", "scheduler"),
    }
    assert {o["metadata"]["namespace"] for o in objs.values()} == {"smets1"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_lite_renders_what_kubectl_kustomize_does() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o}
    assert theirs == _objects()


def test_every_object_is_valid_for_the_pinned_kubernetes_version(
    objs: dict[tuple[str, str], Obj],
) -> None:
    for (kind, name), obj in objs.items():
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {list(exc.path)}")


def test_the_validator_would_catch_a_misspelt_field(objs: dict[tuple[str, str], Obj]) -> None:
    bad = copy.deepcopy(objs["StatefulSet", "fleet"])
    bad["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


# -- one place sets the scale ----------------------------------------------------------------


def _env_value(container: Obj, name: str) -> str:
    [value] = [e["value"] for e in container.get("env", []) if e["name"] == name]
    return str(value)


def _copy_with_scale(tmp_path: Path, fleet: int, dco: int) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    scale = copy / "scale" / "kustomization.yaml"
    doc = yaml.safe_load(scale.read_text())
    doc["replicas"] = [{"name": "fleet", "count": fleet}, {"name": "dco", "count": dco}]
    scale.write_text(yaml.safe_dump(doc))
    return copy


@pytest.mark.parametrize(("fleet", "dco"), [(7, 3), (1, 1)])
def test_the_scale_is_set_once_and_reaches_every_pod(tmp_path: Path, fleet: int, dco: int) -> None:
    copy = _copy_with_scale(tmp_path, fleet, dco)
    rendered = _objects(copy)
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=True
        ).stdout
        assert {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out)} == rendered
    assert rendered["StatefulSet", "fleet"]["spec"]["replicas"] == fleet
    assert rendered["StatefulSet", "dco"]["spec"]["replicas"] == dco
    for workload, container in _smets1(rendered):
        assert _env_value(container, "SMETS1_SHARDS") == str(fleet), workload["metadata"]["name"]
    scheduler = _pod(rendered["Job", "scheduler"])["containers"][0]
    assert _env_value(scheduler, "SMETS1_DCO_WORKERS") == str(dco)
    _check_every_pod_accepts_its_arguments(rendered, tmp_path)


# -- what the manifests give smets1 ------------------------------------------------------------


def _known_variables() -> set[str]:
    """Every SMETS1_* name that smets1's own code reads."""
    names: set[str] = set()
    for package in ("orchestrator", "smets1", "emulator", "dco_mock", "scheduler"):
        for source in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"'](SMETS1_[A-Z0-9_]+)[\"']", source.read_text()))
    return names


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion; a variable the container does not have is an error
    here (Kubernetes would leave the text as it is)."""

    def one(m: re.Match[str]) -> str:
        assert m[1] in env, f"$({m[1]}) is not in the container's environment"
        return env[m[1]]

    return _REF.sub(one, text)


def _pod_env(
    objs: dict[tuple[str, str], Obj], workload: Obj, container: Obj, index: int
) -> dict[str, str]:
    """The environment Kubernetes gives `container` in the pod of this index."""
    pod_name = f"{workload['metadata']['name']}-{index}"
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objs["ConfigMap", source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = _expand(str(entry["value"]), env)
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref:
            env[entry["name"]] = SECRETS[ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]]
        elif ref["fieldRef"]["fieldPath"] == "metadata.name":
            env[entry["name"]] = pod_name
        elif ref["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']":
            env[entry["name"]] = str(index)
        else:
            pytest.fail(f"{entry['name']}: {ref} is not rehearsed here")
    return env


def _file_behind(objs: dict[tuple[str, str], Obj], workload: Obj, container: Obj, path: str) -> str:
    """The text of the ConfigMap key mounted at `path` in the container."""
    folder, _, key = path.rpartition("/")
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    [volume] = [v for v in _pod(workload)["volumes"] if v["name"] == mount["name"]]
    return str(objs["ConfigMap", volume["configMap"]["name"]]["data"][key])


def _parse_as_the_pod_does(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith("SMETS1_")]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        args = build_parser().parse_args(argv)  # argparse: a renamed flag exits here
        _resolve_env(args)  # a bad environment value raises ConfigError, naming it
    return args


def _check_every_pod_accepts_its_arguments(
    objs: dict[tuple[str, str], Obj], tmp_path: Path
) -> None:
    known = _known_variables()
    monkeypatch = pytest.MonkeyPatch()
    try:
        for workload, container in _smets1(objs):
            replicas = workload["spec"].get("replicas", 1)
            for index in range(replicas):
                _check_pod(objs, workload, container, index, known, tmp_path, monkeypatch)
    finally:
        monkeypatch.undo()


def _check_pod(
    objs: dict[tuple[str, str], Obj],
    workload: Obj,
    container: Obj,
    index: int,
    known: set[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where = f"{workload['metadata']['name']}-{index}"
    env = _pod_env(objs, workload, container, index)
    raw = container.get("command", []) + container["args"]
    # Each SMETS1_* variable is read by smets1, or put in its arguments by Kubernetes.
    in_args = {name for arg in raw for name in _REF.findall(arg)}
    unknown = {n for n in env if n.startswith("SMETS1_")} - known - in_args
    assert not unknown, f"{where}: smets1 reads no {sorted(unknown)}"
    argv = [_expand(a, env) for a in raw]
    args = _parse_as_the_pod_does(argv, env, monkeypatch)
    config_file = tmp_path / f"{where}.yaml"
    config_file.write_text(_file_behind(objs, workload, container, args.config))
    config = load_config(config_file)
    broker = parse_broker_url(args.broker)
    service = objs["Service", broker.host]
    assert broker.port == service["spec"]["ports"][0]["port"], where
    assert args.run == objs["ConfigMap", "smets1-run"]["data"]["SMETS1_RUN"]
    # Each pod's folders are its run's own, on its volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for folder in filter(None, (args.state_dir, getattr(args, "out", None))):
        assert f"/{args.run}" in folder and folder.split("/")[1] in {"state"}, folder
        assert "/" + folder.split("/")[1] in mounts, f"{where}: {folder} is on no volume"
    ports = {p["containerPort"] for p in container["ports"]}
    if args.command in ("dco", "scheduler"):
        check_token(env["SMETS1_DCO_TOKEN"], "SMETS1_DCO_TOKEN")
    if args.command == "fleet":
        assert args.shard == index and 0 <= args.shard < args.shards, where
        assert args.shards == objs["StatefulSet", "fleet"]["spec"]["replicas"]
        assert args.port in ports
    elif args.command == "dco":
        assert args.worker == where and args.port in ports
        assert args.shards == objs["StatefulSet", "fleet"]["spec"]["replicas"]
    else:
        assert args.command == "scheduler" and args.exit_when_done, where
        assert args.port in ports
        dco = expand_urls(args.dco or [args.dco_urls], args.dco_workers, "--dco-workers")
        fleet = expand_urls(args.fleet or [args.fleet_urls], args.shards, "--shards")
        assert dco == [_pod_url(objs, "dco", i) for i in range(_replicas(objs, "dco"))]
        assert fleet == [_pod_url(objs, "fleet", i) for i in range(_replicas(objs, "fleet"))]
    assert config.name


def _replicas(objs: dict[tuple[str, str], Obj], name: str) -> int:
    return int(objs["StatefulSet", name]["spec"]["replicas"])


def _pod_url(objs: dict[tuple[str, str], Obj], name: str, index: int) -> str:
    """http://<pod>.<headless service>:<the container's port>: where a pod answers."""
    sts = objs["StatefulSet", name]
    service = objs["Service", sts["spec"]["serviceName"]]
    assert service["spec"].get("clusterIP") == "None", f"{name}: not a headless Service"
    assert service["spec"]["publishNotReadyAddresses"] is True, name
    [port] = _pod(sts)["containers"][0]["ports"]
    return f"http://{name}-{index}.{service['metadata']['name']}:{port['containerPort']}"


def test_every_pod_accepts_its_command_flags_and_environment(
    objs: dict[tuple[str, str], Obj], tmp_path: Path
) -> None:
    _check_every_pod_accepts_its_arguments(objs, tmp_path)


def test_a_renamed_flag_or_variable_fails_the_check(
    objs: dict[tuple[str, str], Obj], tmp_path: Path
) -> None:
    renamed = copy.deepcopy(objs)
    fleet = _pod(renamed["StatefulSet", "fleet"])["containers"][0]
    fleet["args"] = [a.replace("--state-dir", "--flash-dir") for a in fleet["args"]]
    with pytest.raises(SystemExit):
        _check_every_pod_accepts_its_arguments(renamed, tmp_path)
    renamed = copy.deepcopy(objs)
    renamed["ConfigMap", "smets1-run"]["data"]["SMETS1_CLOCK_WAIT_SECONDS"] = "600"
    with pytest.raises(AssertionError, match="SMETS1_CLOCK_WAIT_SECONDS"):
        _check_every_pod_accepts_its_arguments(renamed, tmp_path)


# -- how the pods run ------------------------------------------------------------------------


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert m, quantity
    return int(m[1]) * units[m[2]]


def _cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_every_container_has_requests_and_limits_sized_from_the_measurements(
    objs: dict[tuple[str, str], Obj],
) -> None:
    for workload, container in _containers(objs):
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container["resources"]
        for what, parse in (("memory", _mib), ("cpu", _cores)):
            request = parse(resources["requests"][what])
            limit = parse(resources["limits"][what])
            assert 0 < request <= limit, where
        measured = MEASURED_MIB.get(container["name"])
        if measured is not None:
            assert _mib(resources["requests"]["memory"]) >= measured, where
            assert _mib(resources["limits"]["memory"]) >= 3 * measured, where
    for name in MEASURED_MIB:
        text = (DEPLOY / f"{name}.yaml").read_text()
        assert "BENCHMARKS.md" in text and f"{MEASURED_MIB[name]} MiB" in text, name


def test_every_container_is_probed_on_its_health_endpoints(
    objs: dict[tuple[str, str], Obj],
) -> None:
    health = {"dco": "/health", "fleet": "/health", "scheduler": "/healthz"}
    for workload, container in _containers(objs, init=False):
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe == "startupProbe" and container["name"] == "mosquitto":
                continue
            spec = container[probe]
            handler = spec.get("httpGet") or spec["tcpSocket"]
            assert handler["port"] in named, (container["name"], probe)
        if container["name"] in health:
            assert container["readinessProbe"]["httpGet"]["path"] == health[container["name"]]
            assert container["livenessProbe"]["httpGet"]["path"] == "/metrics"
            annotations = workload["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert int(annotations["prometheus.io/port"]) in named.values()
            assert annotations["prometheus.io/path"] == "/metrics"


def test_every_pod_runs_as_a_numeric_non_root_user_on_a_read_only_root(
    objs: dict[tuple[str, str], Obj],
) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user, "the Dockerfile names no numeric USER uid:gid"
    for workload in _workloads(objs):
        pod = _pod(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True and isinstance(pod["runAsUser"], int)
        assert pod["runAsUser"] > 0 and pod["fsGroup"] == pod["runAsGroup"]
        containers = _pod(workload)["containers"] + _pod(workload).get("initContainers", [])
        if any(c["image"].startswith(IMAGE + ":") for c in containers):
            assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2]))
        for c in containers:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    for _, container in _smets1(objs):  # what the image writes: /state and /tmp
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/state", "/tmp"} <= mounts, container["name"]


def test_images_are_pinned_and_pulled_only_when_missing(objs: dict[tuple[str, str], Obj]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for _, container in _containers(objs):
        name, _, tag = container["image"].rpartition(":")
        assert tag and tag != "latest" and container["imagePullPolicy"] == "IfNotPresent"
        if name == IMAGE:
            assert tag == version  # docker build -t smets1-fleet:<version> (deploy/README.md)


def test_fleet_pods_keep_their_flash_on_a_volume_of_their_own(
    objs: dict[tuple[str, str], Obj],
) -> None:
    for name in ("fleet", "dco"):
        sts = objs["StatefulSet", name]
        [claim] = sts["spec"]["volumeClaimTemplates"]
        mounts = _pod(sts)["containers"][0]["volumeMounts"]
        assert {"name": claim["metadata"]["name"], "mountPath": "/state"} in mounts


def test_the_broker_asks_for_credentials_and_every_pod_has_them(
    objs: dict[tuple[str, str], Obj],
) -> None:
    conf = objs["ConfigMap", "mosquitto"]["data"]["mosquitto.conf"]
    settings = dict(
        line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert settings["allow_anonymous"] == "false"
    broker = objs["StatefulSet", "mosquitto"]
    [init] = _pod(broker)["initContainers"]
    assert settings["password_file"] in init["command"][-1]
    assert settings["listener"] == str(objs["Service", "mosquitto"]["spec"]["ports"][0]["port"])
    for workload, container in _smets1(objs):
        env = _pod_env(objs, workload, container, 0)
        url = parse_broker_url(env["SMETS1_BROKER"])
        assert (url.username, url.password) == (
            SECRETS["smets1-mqtt", "username"],
            SECRETS["smets1-mqtt", "password"],
        )


def test_the_scheduler_is_a_job_that_stops_on_what_a_retry_would_repeat(
    objs: dict[tuple[str, str], Obj],
) -> None:
    job = objs["Job", "scheduler"]
    assert _pod(job)["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    # A drained or evicted pod is replaced whatever it exited with: that rule comes first.
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    [fail] = [r for r in rules if r["action"] == "FailJob"]
    assert set(fail["onExitCodes"]["values"]) == {1, EXIT_USAGE, EXIT_INVALID_RUN}
    claim = _pod(job)["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objs
