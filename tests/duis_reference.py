"""The DCC's own DUIS tools, fetched at test time: the independent reference for DUIS.

Two npm packages the DCC publishes (both GPL-3.0, so never committed here):

- `@smartdcc/duis-sign-wrap@0.1.2`: `package/dist/tool.jar`, the DCC Boxed signing and
  validation tool. It holds the DUIS and MMC schemas (V5.1) and the DCC Boxed test
  organisations' certificates and keys (the "ZAZ1" set).
- `@smartdcc/duis-templates@0.7.0`: the DCC's request templates (`package/templates/`).

Each tarball is fetched with `npm pack` (or, without npm, straight from the registry
address) into `.cache/duis-reference/` at the top of the checkout (git-ignored), checked
against the integrity hash the registry published, and unpacked once. A test that needs
Java is skipped with a clear message where `java` is missing; a failed download fails the
test and names what went wrong.

    ref = duis_reference()            # a DuisReference, fetched and unpacked
    ref.sign(path)                    # java ...xmldsig.Sign FILE  -> signed XML text
    ref.validate(path)                # java ...xmldsig.Validate FILE -> ToolResult
    ref.template("CS06_11.3_IMMEDIATE_SUCCESS_REQUEST_DUIS.XML")  # bytes
    ref.schema_dir                    # folder holding "DUIS Schema V5.1.xsd" and friends
    ref.jar_member("Z1-supplier-ds.pem")  # bytes of a key or certificate in the jar
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SMETS1_DUIS_REFERENCE_CACHE", ROOT / ".cache" / "duis-reference"))
TOOL_PACKAGE = "xmldsig"
JAVA_PACKAGE = "uk.co.smartdcc.boxed.xmldsig"


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # sha512-<base64>, as the registry publishes it

    @property
    def tarball_name(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def registry_url(self) -> str:
        bare = self.name.split("/")[-1]
        return f"https://registry.npmjs.org/{self.name}/-/{bare}-{self.version}.tgz"


SIGN_WRAP = NpmPackage(
    "@smartdcc/duis-sign-wrap",
    "0.1.2",
    "sha512-75KX971ymBkNyL2e761c4HYQ4OinTCFfqW+SoCRtFC9cWm4CirKQ5CfSUp0zCFH8LcSyHhDwRL0cVtOj5NeIHg==",
)
TEMPLATES = NpmPackage(
    "@smartdcc/duis-templates",
    "0.7.0",
    "sha512-ASkoKAuIW/Io0jTFmsRVnaPzm6Z5IIefipJq3aD6fknxqSdSxTrWQ6BxktvuVDPYO2SWbJATzg6oDEKxwNWb2Q==",
)


class ReferenceUnavailable(RuntimeError):
    """The reference could not be fetched or checked; the message says why."""


def _integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def _fetch(package: NpmPackage) -> Path:
    """The package's tarball in the cache, fetched if missing, always checked."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / package.tarball_name
    if not tarball.exists():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            got = Path(tmp) / package.tarball_name
            npm = shutil.which("npm")
            if npm is not None:
                done = subprocess.run(
                    [npm, "pack", f"{package.name}@{package.version}", "--silent"],
                    cwd=tmp,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if done.returncode != 0 or not got.exists():
                    raise ReferenceUnavailable(
                        f"npm pack {package.name}@{package.version} failed "
                        f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
                    )
            else:
                try:
                    with urllib.request.urlopen(package.registry_url, timeout=120) as resp:
                        got.write_bytes(resp.read())
                except OSError as exc:
                    raise ReferenceUnavailable(
                        f"npm is not installed and {package.registry_url} could not be "
                        f"fetched: {exc}"
                    ) from exc
            got.replace(tarball)
    data = tarball.read_bytes()
    if _integrity_of(data) != package.integrity:
        tarball.unlink()
        raise ReferenceUnavailable(
            f"{package.name}@{package.version}: integrity {_integrity_of(data)[:30]}… is not "
            f"the published {package.integrity[:30]}…; the cached tarball was removed"
        )
    return tarball


def _unpacked(package: NpmPackage) -> Path:
    """The package unpacked under the cache (`<cache>/<tarball stem>/package/...`)."""
    tarball = _fetch(package)
    target = CACHE / tarball.name.removesuffix(".tgz")
    if not (target / ".complete").exists():
        if target.exists():
            shutil.rmtree(target)
        staging = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(tarball) as tar:
            tar.extractall(staging, filter="data")
        staging.rename(target)
        (target / ".complete").touch()
    return target / "package"


@dataclass(frozen=True)
class ToolResult:
    returncode: int  # 0 pass, 10 validation failed, 3 missing key material, 1/2 errors
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class DuisReference:
    jar: Path
    schema_dir: Path
    templates_dir: Path

    def jar_member(self, name: str) -> bytes:
        with zipfile.ZipFile(self.jar) as jar:
            return jar.read(name)

    def template(self, name: str) -> bytes:
        return (self.templates_dir / name).read_bytes()

    def _run(self, mode: str, path: Path, *extra: str) -> ToolResult:
        java = shutil.which("java")
        if java is None:
            pytest.skip("java is not installed: the DCC's DUIS tool (tool.jar) needs Java 11+")
        done = subprocess.run(
            [java, "-cp", str(self.jar), f"{JAVA_PACKAGE}.{mode}", str(path), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return ToolResult(done.returncode, done.stdout, done.stderr)

    def sign(self, path: Path, *, preserve_counter: bool = True) -> str:
        """Sign a DUIS request with the key of its RequestID's sender; the signed XML."""
        extra = ("--preserveCounter",) if preserve_counter else ()
        result = self._run("Sign", path, *extra)
        if not result.passed:
            raise AssertionError(f"DCC tool Sign failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def validate(self, path: Path) -> ToolResult:
        """Schema and signature check by the DCC's tool (exit 0 pass, 10 fail, 3 unknown)."""
        return self._run("Validate", path)


@cache
def duis_reference() -> DuisReference:
    """Fetch (once per cache) and unpack the DCC's DUIS tool and templates."""
    sign_wrap = _unpacked(SIGN_WRAP)
    templates = _unpacked(TEMPLATES)
    jar = sign_wrap / "dist" / "tool.jar"
    schema_dir = jar.parent / "schemas"
    if not (schema_dir / ".complete").exists():
        schema_dir.mkdir(exist_ok=True)
        with zipfile.ZipFile(jar) as archive:
            for member in archive.namelist():
                if member.endswith((".xsd", ".dtd")) and "/" not in member:
                    (schema_dir / member).write_bytes(archive.read(member))
        (schema_dir / ".complete").touch()
    return DuisReference(jar=jar, schema_dir=schema_dir, templates_dir=templates / "templates")


@pytest.fixture(scope="session")
def duis_ref() -> DuisReference:
    """The DCC's DUIS reference (tool.jar, schemas, templates) for a test.

    Import it into a conftest.py (tests/scheduler/conftest.py does) to use it by name.
    """
    try:
        return duis_reference()
    except ReferenceUnavailable as exc:
        pytest.fail(f"the DCC's DUIS reference could not be fetched: {exc}", pytrace=False)
