"""XML signatures as the DCC profiles them for DUIS, by signxml (never by hand).

The profile, as the DCC Boxed signing tool writes it: an enveloped `ds:Signature`, the
last child of the root element; exclusive C14N; ECDSA-SHA256 over P-256; a SHA-256
digest of one `Reference URI=""` (the whole document, less the signature); `KeyInfo`
holding `X509Data/X509IssuerSerial` only (the verifier finds the certificate by issuer and
serial among those it knows).

    signed = sign(document, key, cert)
    root = parse(signed)                       # lxml, no DTD, no entities, no network
    ref = key_reference(root)                  # KeyRef(issuer="CN=Z1,OU=07", serial=...)
    verify(root, cert, at=datetime.now(UTC))   # SignatureInvalid if it does not hold

Anything that is not this profile (another algorithm, a second reference, a signature
elsewhere, two signatures) is refused before any cryptography is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.exceptions import InvalidInput, SignXMLException
from signxml.verifier import SignatureConfiguration

from scheduler.errors import BadDocument, SignatureInvalid
from smets1.duis_keys import issuer_serial

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
_NS = {"ds": DS_NS}


def _parser() -> etree.XMLParser:
    """No entities, no DTD, no network. `huge_tree`: an 11.1 carries its image as one
    base64 text node, past libxml2's 10 MB default (the document's size is bounded by
    `max_document_bytes` before it gets here). One parser a call: lxml parsers are not
    shared between threads."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class _Verifier(XMLVerifier):
    @property
    def parser(self) -> etree.XMLParser:
        return _parser()


class _Signer(XMLSigner):
    @property
    def parser(self) -> etree.XMLParser:
        return _parser()


def _ds(local: str) -> str:
    return f"{{{DS_NS}}}{local}"


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Who signed, as KeyInfo names it: the certificate's issuer and serial number."""

    issuer: str
    serial: int


def parse(document: bytes) -> etree._Element:
    """The root of `document` (lxml); a DTD or entity is refused (BadDocument)."""
    try:
        tree = etree.fromstring(document, _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise BadDocument("document", f"not well-formed XML: {exc}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise BadDocument("document", "a DTD (<!DOCTYPE>) is not allowed in DUIS")
    return tree.getroot()


def same_name(a: str, b: str) -> bool:
    """Two X.500 names in RFC 4514/2253 text, equal whatever the spaces and the case of
    the attribute types ("CN=Z1, OU=07" is "cn=Z1,OU=07")."""

    def norm(text: str) -> list[tuple[str, str]]:
        parts, cur, escaped = [], "", False
        for ch in text:
            if escaped:
                cur += ch
                escaped = False
            elif ch == "\\":
                cur += ch
                escaped = True
            elif ch in ",+":
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        out = []
        for part in parts:
            key, _, value = part.partition("=")
            out.append((key.strip().upper(), value.strip()))
        return out

    return norm(a) == norm(b)


def signatures_of(root: etree._Element) -> list[etree._Element]:
    return root.findall(f".//{_ds('Signature')}")


def key_reference(root: etree._Element) -> KeyRef | None:
    """The issuer and serial the document's one signature names; None when unsigned.
    SignatureInvalid if the signature is not where the profile puts it, or names its
    key any other way."""
    sigs = signatures_of(root)
    if not sigs:
        return None
    if len(sigs) > 1:
        raise SignatureInvalid(f"{len(sigs)} ds:Signature elements; expected one")
    sig = sigs[0]
    children = [c for c in root if isinstance(c.tag, str)]
    if sig.getparent() is not root or children[-1] is not sig:
        raise SignatureInvalid("ds:Signature must be the last child of the root element")
    serials = sig.findall("ds:KeyInfo/ds:X509Data/ds:X509IssuerSerial", _NS)
    if len(serials) != 1:
        raise SignatureInvalid(
            "ds:KeyInfo must hold one ds:X509Data/ds:X509IssuerSerial (issuer and serial "
            "of the signing certificate)"
        )
    issuer = (serials[0].findtext("ds:X509IssuerName", None, _NS) or "").strip()
    serial_text = (serials[0].findtext("ds:X509SerialNumber", None, _NS) or "").strip()
    if not issuer or not serial_text.isdigit() or len(serial_text) > 60:
        raise SignatureInvalid(
            f"ds:X509IssuerSerial needs an X509IssuerName and a decimal X509SerialNumber, "
            f"got {issuer[:60]!r} and {serial_text[:60]!r}"
        )
    return KeyRef(issuer, int(serial_text))


def _check_profile(sig: etree._Element) -> None:
    """The DCC's profile, element by element, before signxml verifies anything."""

    def algorithm(path: str) -> str | None:
        el = sig.find(path, _NS)
        return None if el is None else el.get("Algorithm")

    expected = {
        "ds:SignedInfo/ds:CanonicalizationMethod": EXC_C14N,
        "ds:SignedInfo/ds:SignatureMethod": ECDSA_SHA256,
    }
    for path, want in expected.items():
        got = algorithm(path)
        if got != want:
            raise SignatureInvalid(f"{path.split('/')[-1]}: expected {want}, got {got!r}")
    refs = sig.findall("ds:SignedInfo/ds:Reference", _NS)
    if len(refs) != 1 or refs[0].get("URI") != "":
        got_uris = [r.get("URI") for r in refs][:3]
        raise SignatureInvalid(
            f'expected one ds:Reference URI="" (the whole document), got {got_uris}'
        )
    transforms = [t.get("Algorithm") for t in refs[0].findall("ds:Transforms/ds:Transform", _NS)]
    if transforms not in ([ENVELOPED], [ENVELOPED, EXC_C14N]):
        raise SignatureInvalid(
            f"ds:Transforms: expected the enveloped-signature transform (and exclusive "
            f"C14N), got {transforms[:4]}"
        )
    digest = refs[0].find("ds:DigestMethod", _NS)
    if digest is None or digest.get("Algorithm") != SHA256:
        got = None if digest is None else digest.get("Algorithm")
        raise SignatureInvalid(f"DigestMethod: expected {SHA256}, got {got!r}")


def verify(root: etree._Element, cert: x509.Certificate, *, at: datetime | None) -> None:
    """SignatureInvalid unless `root` holds one signature of the DCC's profile, made with
    the key of `cert` over the whole document. `at`: the time at which the certificate
    must be valid (None: its validity dates are not checked)."""
    sigs = signatures_of(root)
    if len(sigs) != 1:
        raise SignatureInvalid(f"{len(sigs)} ds:Signature elements; expected one")
    _check_profile(sigs[0])
    when = at if at is not None else cert.not_valid_before_utc
    config = SignatureConfiguration(
        location="./",
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
        verification_time=when,
    )
    document = etree.tostring(root)
    try:
        _Verifier().verify(document, x509_cert=cert, expect_config=config)
    except InvalidInput as exc:
        raise SignatureInvalid(f"the signature cannot be checked: {exc}") from None
    except SignXMLException as exc:
        raise SignatureInvalid(f"the signature does not verify: {exc}") from None
    except (ValueError, TypeError) as exc:  # e.g. SignatureValue that is not base64
        raise SignatureInvalid(f"the signature cannot be read: {exc}") from None


def sign(document: bytes, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytes:
    """`document` with an enveloped signature of the DCC's profile as its root's last
    child (a signature it already holds is replaced), KeyInfo naming `cert` by issuer and
    serial; UTF-8 with an XML declaration."""
    root = parse(document)
    # The root's own signature only: a signed part it carries (the SMETS1SignedResponse
    # of a DUIS response) keeps its signature, inside what this one covers.
    for old in root.findall(_ds("Signature")):
        root.remove(old)
    issuer, serial = issuer_serial(cert)
    key_info = etree.Element(_ds("KeyInfo"), nsmap={"ds": DS_NS})
    data = etree.SubElement(key_info, _ds("X509Data"))
    pair = etree.SubElement(data, _ds("X509IssuerSerial"))
    etree.SubElement(pair, _ds("X509IssuerName")).text = issuer
    etree.SubElement(pair, _ds("X509SerialNumber")).text = str(serial)
    signer = _Signer(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    # Comments before the root (a refusal's reason: DUIS has no element for it) are kept;
    # exclusive C14N leaves comments out, so they are not signed, only carried.
    before = []
    node = root.getprevious()
    while node is not None:
        if isinstance(node, etree._Comment):
            before.append(etree.tostring(node))
        node = node.getprevious()
    signed = signer.sign(root, key=key, key_info=key_info)
    head = b"<?xml version='1.0' encoding='UTF-8'?>\n" + b"\n".join(reversed(before))
    return head + (b"\n" if before else b"") + bytes(etree.tostring(signed, encoding="UTF-8"))
