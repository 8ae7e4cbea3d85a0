"""DUIS documents checked against the DCC's XML schema (`DUIS Schema V5.1.xsd`), by lxml.

The schema files are the DCC's (the folder `scheduler.duis.schema_dir` names; the tests
take them from the DCC's tool): `DUIS Schema V5.1.xsd` imports the MMC schema and the
xmldsig schema beside it. They are read once, from that folder only (no network).

    schema = DuisSchema(Path("schemas"))
    schema.problems(root)        # [] or ["line 7: Element '{...}FirmwareHash': ..."]
    schema.check_request(root)   # BadDocument naming the first problem
    schema.check_outgoing(data)  # DuisSchemaInvalid: the scheduler's own bug, never sent
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import unquote

from lxml import etree

from scheduler.errors import BadDocument, DuisSchemaInvalid
from scheduler.xmldsig import parse
from smets1.config_dcc import DUIS_SCHEMA_FILE
from smets1.errors import ConfigError

#: Problems named in one error; the rest are counted.
MAX_PROBLEMS_SHOWN = 3


_XS = "{http://www.w3.org/2001/XMLSchema}"


def _local_imports(doc: etree._ElementTree, folder: Path) -> None:
    """Point each import of the schema at its file in `folder`, as a file URI: libxml2
    skips a relative schemaLocation holding a space ("MMC Schema V5.1.xsd") without a
    word, and nothing is to be fetched from anywhere else."""
    for imp in doc.getroot().iter(f"{_XS}import", f"{_XS}include"):
        location = imp.get("schemaLocation")
        if location is None:
            continue
        local = folder / Path(unquote(location)).name
        if not local.is_file():
            raise ConfigError(
                f"scheduler.duis.schema_dir: {folder} has no {local.name!r}, which "
                f"{DUIS_SCHEMA_FILE!r} imports"
            )
        imp.set("schemaLocation", local.as_uri())


class DuisSchema:
    def __init__(self, folder: Path) -> None:
        path = folder / DUIS_SCHEMA_FILE
        parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
        try:
            doc = etree.parse(str(path), parser)
            _local_imports(doc, folder.resolve())
            self._schema = etree.XMLSchema(doc)
        except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
            raise ConfigError(
                f"scheduler.duis.schema_dir: {path} cannot be used as the DUIS schema: {exc}"
            ) from None
        self.folder = folder
        self._lock = threading.Lock()

    def problems(self, root: etree._Element) -> list[str]:
        """What makes `root` invalid against the DUIS schema ([] when it is valid)."""
        with self._lock:  # the error log is the schema object's: one validation at a time
            if self._schema.validate(root):
                return []
            return [f"line {e.line}: {e.message}" for e in self._schema.error_log]

    def _summary(self, problems: list[str]) -> str:
        text = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        if len(problems) > MAX_PROBLEMS_SHOWN:
            text += f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more"
        return text

    def check_request(self, root: etree._Element) -> None:
        """BadDocument if a received document is not valid DUIS."""
        found = self.problems(root)
        if found:
            raise BadDocument(
                "document", f"not valid against {DUIS_SCHEMA_FILE}: " + self._summary(found)
            )

    def check_outgoing(self, document: bytes) -> None:
        """DuisSchemaInvalid if a document the scheduler is about to send is not valid."""
        try:
            root = parse(document)
        except BadDocument as exc:
            raise DuisSchemaInvalid(f"an outgoing DUIS document: {exc.reason}") from None
        found = self.problems(root)
        if found:
            raise DuisSchemaInvalid(
                f"an outgoing DUIS document is not valid against {DUIS_SCHEMA_FILE} (not "
                f"sent): {self._summary(found)}"
            )
