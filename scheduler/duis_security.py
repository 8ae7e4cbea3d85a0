"""DUIS security: what the scheduler signs on the way out and checks on the way in.

The DCC's profile (scheduler.xmldsig): an enveloped XMLDSig signature, ECDSA-SHA256 over
P-256, exclusive C14N, KeyInfo naming the certificate by issuer and serial.

- `seal(document)`: the bytes to send, checked against the DUIS schema first (with
  `scheduler.duis.schema_dir`) and signed with the DCC's key (`signing_key` and
  `signing_certificate`; without them, sent unsigned). Every acknowledgement, response
  and refusal goes through it. A document that fails the schema is not sent
  (DuisSchemaInvalid: a bug of the scheduler's).
- `authenticate(document)` (`verify`, which may run in a worker thread; `check_replay`,
  which reads the store; then `check_schema`): the EUI-64 of the User whose configured
  `certificate` signed the document, or None for an unsigned document where
  `require_signature` is false (the bearer token then says who it is). A signature must
  be the DCC profile's, made with a configured User's certificate, over the whole
  document; the RequestID's sender must be that User, and its counter greater than the
  last one accepted from that sender (the store keeps it across restarts). Otherwise
  DuisRefused, with the DUIS response code (`REFUSAL_CODE`) and the HTTP status. Once
  authenticated, the document is validated against the schema (with `schema_dir`;
  BadDocument otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from scheduler import xmldsig
from scheduler.duis_schema import DuisSchema
from scheduler.errors import BadDocument, DuisRefused, SignatureInvalid
from scheduler.store import Store
from smets1.config_dcc import SchedulerConfig, UserConfig
from smets1.duis_keys import (
    KeyFileError,
    check_pair,
    issuer_serial,
    load_certificate,
    load_private_key,
)
from smets1.errors import ConfigError
from smets1.eui64 import format_eui64, parse_eui64

SR_NS = "http://www.dccinterface.co.uk/ServiceUserGateway"
#: DUIS ResponseCode of every refusal here: "Failed Authorisation – Invalid User / User
#: Role": the request does not prove it comes from the User it names (no signature, a
#: signature that fails, a certificate of no User, another User's signature, a replay).
REFUSAL_CODE = "E1"
#: HTTP status of each kind of refusal (the DUIS code is REFUSAL_CODE for all).
STATUS_UNAUTHENTICATED = 401
STATUS_NOT_SIGNER = 403
STATUS_REPLAY = 409


@dataclass(frozen=True, slots=True)
class Signer:
    """A request whose signature verified: its User (the RequestID's sender too), the
    RequestID's counter, the RequestID."""

    user: int
    counter: int
    request_id: str


def _now() -> datetime:
    return datetime.now(UTC)


#: A document whose root is the signed SMETS1 response a DUIS response carries.
_INNER_ROOT = re.compile(
    rb"(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*<(?:[\w.-]+:)?SMETS1SignedResponse[\s>/]", re.S
)


class DuisSecurity:
    def __init__(
        self,
        config: SchedulerConfig,
        users: Mapping[int, UserConfig] | None = None,
        store: Store | None = None,
        *,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.config = config
        self.duis = config.duis
        self.users: Mapping[int, UserConfig] = (
            users if users is not None else {u.id: u for u in config.users}
        )
        self.store = store if store is not None else Store(None)
        self._now = now
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None
        if self.duis.signing_key is not None and self.duis.signing_certificate is not None:
            try:
                key = load_private_key(self.duis.signing_key)
            except KeyFileError as exc:
                raise ConfigError(f"scheduler.duis.signing_key: {exc}") from None
            try:
                cert = load_certificate(self.duis.signing_certificate)
            except KeyFileError as exc:
                raise ConfigError(f"scheduler.duis.signing_certificate: {exc}") from None
            try:
                check_pair(key, cert)
            except KeyFileError as exc:
                raise ConfigError(f"scheduler.duis.signing_key: {exc}") from None
            self._key, self._cert = key, cert
        self.schema = DuisSchema(self.duis.schema_dir) if self.duis.schema_dir else None
        self._certs: dict[tuple[int, str], x509.Certificate] = {}

    # -- properties ------------------------------------------------------------------

    @property
    def signing_enabled(self) -> bool:
        """Whether documents sent are signed (the DCC's key and certificate are set)."""
        return self._key is not None

    @property
    def require_signature(self) -> bool:
        """Whether an unsigned request is refused (default: when a User has a certificate)."""
        if self.duis.require_signature is not None:
            return self.duis.require_signature
        return any(u.certificate is not None for u in self.users.values())

    # -- out -------------------------------------------------------------------------

    def seal(self, document: bytes, *, check_schema: bool = True) -> bytes:
        """`document` as sent: signed (with the signing key), then schema-checked as it
        will go (with schema_dir, unless `check_schema` is False: the DUIS schema wants
        the signature where it has one). An `sr:SMETS1SignedResponse` is no document of
        its own: it is checked inside the response that carries it."""
        if self._key is not None and self._cert is not None:
            document = xmldsig.sign(document, self._key, self._cert)
        if self.schema is not None and check_schema and not _INNER_ROOT.match(document):
            self.schema.check_outgoing(document)
        return document

    # -- in --------------------------------------------------------------------------

    def _user_certificates(self) -> list[tuple[UserConfig, x509.Certificate]]:
        out = []
        for user in self.users.values():
            if user.certificate is None:
                continue
            key = (user.id, str(user.certificate))
            cert = self._certs.get(key)
            if cert is None:
                try:
                    cert = load_certificate(user.certificate)
                except KeyFileError as exc:
                    raise ConfigError(
                        f"scheduler.users {format_eui64(user.id)} certificate: {exc}"
                    ) from None
                self._certs[key] = cert
            out.append((user, cert))
        return out

    def _signer(self, ref: xmldsig.KeyRef) -> tuple[UserConfig, x509.Certificate] | None:
        for user, cert in self._user_certificates():
            issuer, serial = issuer_serial(cert)
            if serial == ref.serial and xmldsig.same_name(issuer, ref.issuer):
                return user, cert
        return None

    def authenticate(self, document: bytes) -> int | None:
        """The User who signed `document` (see the module's docstring); None when it is
        unsigned and signatures are not required. `verify`, `check_replay`, then
        `check_schema`: a request is authenticated before it is validated."""
        signer = self.verify(document)
        if signer is not None:
            self.check_replay(signer)
        self.check_schema(document)
        return None if signer is None else signer.user

    def check_schema(self, document: bytes) -> None:
        """BadDocument if `document` is not valid against the DUIS schema (with
        `schema_dir`; without it, nothing to check)."""
        if self.schema is not None:
            self.schema.check_request(xmldsig.parse(document))

    def verify(self, document: bytes) -> Signer | None:
        """The signature, its signer and the RequestID's sender (not the counter, not the
        schema). Reads no store, so it may run in a worker thread (large documents)."""
        root = xmldsig.parse(document)
        request_id = _request_id(root)
        try:
            ref = xmldsig.key_reference(root)
        except SignatureInvalid as exc:
            raise self._refused(f"signature refused: {exc.reason}", request_id) from None
        if ref is None:
            if self.require_signature:
                raise self._refused(
                    "the request is not signed; this scheduler requires every DUIS request "
                    "to be signed with its User's XML-signing certificate",
                    request_id,
                )
            return None
        found = self._signer(ref)
        if found is None:
            raise self._refused(
                f"signed with a certificate of no User here (issuer {ref.issuer[:80]!r}, "
                f"serial {ref.serial}): configure it as the User's certificate",
                request_id,
            )
        user, cert = found
        at = self._now() if self.duis.check_certificate_dates else None
        try:
            xmldsig.verify(root, cert, at=at)
        except SignatureInvalid as exc:
            raise self._refused(f"signature refused: {exc.reason}", request_id) from None
        if request_id is None:
            raise BadDocument("sr:Header/sr:RequestID", "missing")
        sender, counter = _sender_and_counter(request_id)
        if sender != user.id:
            raise self._refused(
                f"RequestID sender {format_eui64(sender)} is not the signer "
                f"{format_eui64(user.id)}",
                request_id,
                STATUS_NOT_SIGNER,
            )
        return Signer(user.id, counter, request_id)

    def check_replay(self, signer: Signer) -> None:
        """DuisRefused unless the signed request's counter is greater than the last one
        accepted from its sender (the store's, so on the event loop's thread)."""
        last = self.store.last_duis_counter(signer.user)
        if last is not None and signer.counter <= last:
            raise self._refused(
                f"RequestID counter {signer.counter} is not greater than {last}, the last "
                f"accepted from {format_eui64(signer.user)} (a replay?)",
                signer.request_id,
                STATUS_REPLAY,
            )

    @staticmethod
    def _refused(
        reason: str, request_id: str | None, status: int = STATUS_UNAUTHENTICATED
    ) -> DuisRefused:
        return DuisRefused(reason, code=REFUSAL_CODE, status=status, request_id=request_id)


def _request_id(root: etree._Element) -> str | None:
    el = root.find(f"{{{SR_NS}}}Header/{{{SR_NS}}}RequestID")
    if el is None or not el.text:
        return None
    text = el.text.strip()
    return text if len(text) <= 80 else None


def _sender_and_counter(request_id: str) -> tuple[int, int]:
    parts = request_id.split(":")
    try:
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(request_id)
        return parse_eui64(parts[0]), int(parts[2])
    except ValueError:
        raise BadDocument(
            "sr:Header/sr:RequestID",
            f"expected sender-EUI64:target-EUI64:counter, got {request_id[:80]!r}",
        ) from None
