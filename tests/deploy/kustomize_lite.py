"""`kubectl kustomize deploy/` without kubectl: the few kustomize features deploy/ uses,
in PyYAML, so that the manifests can be rendered and checked on a machine that has only
what PyPI gives (no kustomize there: deploy/README.md says why deploy/ keeps to these).

What it does, in kustomize's order: a kustomization's `resources` (files, or folders
with a kustomization of their own), then each of its `components` (a Component's
resources are added, then its transformers act on everything so far), then its own
`configMapGenerator` (`files` and `literals`; only with
`generatorOptions.disableNameSuffixHash: true`), `namespace`, `images`, `replicas` and
`replacements` (a source and targets selected by kind and name; field paths with
`[name=...]` list selectors; a string target stays a string). Any other key, and any
other form of these, is an error: a manifest change that needs more of kustomize fails
here, instead of rendering something kustomize would not. Where kubectl is installed,
tests/deploy/test_manifests.py checks that both render the same objects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "configMapGenerator",
    "generatorOptions",
    "images",
    "replicas",
    "replacements",
}
#: Kinds whose objects take no namespace (of those a manifest here might hold).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet"}


class Unsupported(Exception):
    """deploy/ uses a kustomize feature this renderer does not have."""


def render(folder: Path) -> list[Obj]:
    """The objects `kubectl kustomize folder` prints, in no particular order."""
    kust = _load(folder, "Kustomization")
    objs = _resources(folder, kust)
    for component in kust.get("components", []):
        comp_dir = folder / component
        comp = _load(comp_dir, "Component")
        objs = _transform(comp_dir, comp, objs + _resources(comp_dir, comp))
    return _transform(folder, kust, objs)


def _load(folder: Path, kind: str) -> Obj:
    doc = yaml.safe_load((folder / "kustomization.yaml").read_text())
    if doc.get("kind", "Kustomization") != kind:
        raise Unsupported(f"{folder}: expected a {kind}, got {doc.get('kind')}")
    unknown = set(doc) - KNOWN
    if unknown:
        raise Unsupported(f"{folder}/kustomization.yaml: {sorted(unknown)}")
    return dict(doc)


def _resources(folder: Path, kust: Obj) -> list[Obj]:
    objs: list[Obj] = []
    for entry in kust.get("resources", []):
        path = folder / entry
        if path.is_dir():
            objs += render(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objs


def _transform(folder: Path, kust: Obj, objs: list[Obj]) -> list[Obj]:
    objs = objs + _config_maps(folder, kust)
    if "namespace" in kust:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        _set_image(objs, image)
    for rep in kust.get("replicas", []):
        targets = [o for o in objs if o["kind"] in WORKLOADS and _name(o) == rep["name"]]
        if not targets:
            raise Unsupported(f"replicas: no workload named {rep['name']}")
        for obj in targets:
            obj["spec"]["replicas"] = rep["count"]
    for replacement in kust.get("replacements", []):
        _replace(objs, replacement)
    return objs


def _config_maps(folder: Path, kust: Obj) -> list[Obj]:
    generators = kust.get("configMapGenerator", [])
    if generators and not kust.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise Unsupported("configMapGenerator without disableNameSuffixHash: true")
    maps = []
    for gen in generators:
        if set(gen) - {"name", "files", "literals"}:
            raise Unsupported(f"configMapGenerator {gen['name']}: {sorted(gen)}")
        data: dict[str, str] = {}
        for entry in gen.get("files", []):
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (folder / path).read_text()
        for entry in gen.get("literals", []):
            key, _, value = entry.partition("=")
            data[key] = value
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    return maps


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if "template" in spec:
        return [spec["template"]["spec"]]
    if "jobTemplate" in spec:
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _set_image(objs: list[Obj], image: Obj) -> None:
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"images: {sorted(image)}")
    for obj in objs:
        for pod in _pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                if name == image["name"]:
                    tag = image.get("newTag")
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")


_STEP = re.compile(r"\[([^=\]]+)=([^\]]*)\]|([^.\[\]]+)")


def _steps(path: str) -> list[tuple[str, str] | str]:
    steps: list[tuple[str, str] | str] = []
    for m in _STEP.finditer(path):
        steps.append((m[1], m[2]) if m[1] else m[3])
    return steps


def _walk(node: Any, steps: list[tuple[str, str] | str]) -> tuple[Any, Any]:
    """The container of the last step and its key (a dict key or a list index)."""
    for step in steps[:-1]:
        node = node[_key(node, step)]
    return node, _key(node, steps[-1])


def _key(node: Any, step: tuple[str, str] | str) -> Any:
    if isinstance(step, tuple):
        field, value = step
        for i, item in enumerate(node):
            if str(item.get(field)) == value:
                return i
        raise Unsupported(f"no item with {field}={value}")
    if step not in node:
        raise Unsupported(f"no field {step}")
    return step


def _select(objs: list[Obj], select: Obj) -> list[Obj]:
    if set(select) - {"kind", "name"}:
        raise Unsupported(f"select: {sorted(select)}")
    found = [
        o for o in objs if o["kind"] == select["kind"] and _name(o) == select.get("name", _name(o))
    ]
    if not found:
        raise Unsupported(f"select: nothing is {select}")
    return found


def _replace(objs: list[Obj], replacement: Obj) -> None:
    if set(replacement) != {"source", "targets"}:
        raise Unsupported(f"replacements: {sorted(replacement)}")
    source = replacement["source"]
    [obj] = _select(objs, {k: source[k] for k in ("kind", "name")})
    parent, key = _walk(obj, _steps(source["fieldPath"]))
    value = parent[key]
    for target in replacement["targets"]:
        if set(target) != {"select", "fieldPaths"}:
            raise Unsupported(f"replacement target: {sorted(target)}")
        for obj in _select(objs, target["select"]):
            for path in target["fieldPaths"]:
                parent, key = _walk(obj, _steps(path))
                parent[key] = str(value) if isinstance(parent[key], str) else value
