"""Config of the DCC side: images, campaigns, the scheduler and the DCO."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, field_validator, model_validator

from smets1.config_policy import Mp230Policy, PolicyConfig, known_kind
from smets1.config_types import U16, U32, Eui64, FieldError, FilePath, Number, Strict
from smets1.duis_keys import (
    KeyFileError,
    check_pair,
    issuer_serial,
    load_certificate,
    load_private_key,
)
from smets1.image import (
    LARGE_IMAGE_BYTES,
    SIGNATURE_BYTES,
    SUBELEMENT_HEAD_BYTES,
    FieldControl,
    header_length_for,
)
from smets1.limits import MAX_IMAGE_BYTES


class ImageConfig(Strict):
    name: str
    manufacturer_code: U16
    image_type: U16
    file_version: U32
    #: Size of the whole OTA file; the body is padded with seeded bytes to fit.
    size_bytes: Number | None = Field(None, gt=0)
    #: Or an existing OTA file, used as it is.
    file: FilePath | None = None
    hardware_versions: tuple[U16, U16] | None = None
    #: PEM private key; default: the demo key of the manufacturer code.
    key: FilePath | None = None
    seed: int = 0

    @field_validator("size_bytes")
    @classmethod
    def _fits_memory(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_IMAGE_BYTES:
            raise ValueError(
                f"at most {MAX_IMAGE_BYTES:,} bytes (smets1.limits.MAX_IMAGE_BYTES), got"
                f" {value:,}: every process of a run holds each image in memory and each"
                " device receiving it a copy; SMETS1 images are a few MB"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ImageConfig:
        if (self.size_bytes is None) == (self.file is None):
            raise ValueError("give exactly one of size_bytes or file")
        if (
            self.hardware_versions is not None
            and self.hardware_versions[0] > (self.hardware_versions[1])
        ):
            raise FieldError(
                ("hardware_versions",),
                f"expected [min, max] with min <= max, got {list(self.hardware_versions)}",
            )
        if self.size_bytes is not None and self.size_bytes < self.smallest_size_bytes:
            raise FieldError(
                ("size_bytes",),
                f"at least {self.smallest_size_bytes} bytes are needed for the header,"
                f" the sub-element heads and the signature, got {self.size_bytes}",
            )
        return self

    @property
    def smallest_size_bytes(self) -> int:
        """The size of a signed image with an empty manufacturer image."""
        fc = FieldControl.HARDWARE_VERSIONS if self.hardware_versions is not None else 0
        return header_length_for(fc) + 2 * SUBELEMENT_HEAD_BYTES + SIGNATURE_BYTES


class DeviceSelection(Strict):
    """Which devices a campaign targets: every device of a model, or `count` of them from
    `offset` on."""

    model: str
    count: int | None = Field(None, gt=0)
    #: Skip this many devices of the model first (so campaigns can split a model).
    offset: int = Field(0, ge=0)


class CampaignConfig(Strict):
    name: str
    user: Eui64
    image: str
    devices: DeviceSelection
    #: Seconds after the start of the run at which the User submits.
    submit_after_seconds: float = Field(0.0, ge=0)
    #: Security fixes take precedence over routine work (never silently over a schedule).
    priority: Literal["routine", "security"] = "routine"
    #: `agreed`: the User asks for a delivery schedule at submission and accepts the
    #: proposal at once; `none`: unscheduled (at most the User's daily allowance).
    schedule: Literal["none", "agreed"] = "none"
    #: Largest daily batch the User wants in an agreed schedule (default: any).
    max_per_day: int | None = Field(None, gt=0)
    #: Send the devices in batches of this many, one every `batch_every_seconds` from
    #: `submit_after_seconds` on, as a User's system sends each day's work (default: all
    #: at once). Batch k (from 1) is the campaign `name#k`; each is submitted like a
    #: campaign of its own (with `schedule: agreed`, each asks for its own schedule).
    batch_size: int | None = Field(None, gt=0)
    batch_every_seconds: float = Field(86_400.0, gt=0)


class UserConfig(Strict):
    """A DCC User (a Supplier's system, or the Service Desk) allowed to call the scheduler."""

    id: Eui64
    name: str = ""
    #: Bearer token its system presents on every HTTP call.
    token: str = Field("", max_length=512)
    #: Where its DUIS responses and notifications are POSTed (none: poll only). Not
    #: under `smets1 run` (virtual clock): there notifications are only stored.
    callback_url: str | None = None
    #: May ask for and accept schedules on behalf of other Users.
    service_desk: bool = False
    #: PEM X.509 certificate of its XML-signing key: a DUIS request signed with it is
    #: authenticated by the signature alone (scheduler.duis).
    certificate: FilePath | None = None


class PeakWindow(Strict):
    """Hours of each day ([start, end), UK local time as the wall clock reads it: GMT in
    winter, BST in summer; `SchedulerConfig.peak_timezone`) when no large image is
    released."""

    start_hour: float = Field(ge=0, le=24)
    end_hour: float = Field(ge=0, le=24)

    @model_validator(mode="after")
    def _ordered(self) -> PeakWindow:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        return self


class DuisConfig(Strict):
    """XML signatures and schema checks of DUIS (XMLDSig, ECDSA P-256, exclusive C14N)."""

    #: The DCC's private key (PEM or DER, EC P-256) with which every response and
    #: acknowledgement is signed; with `signing_certificate`, or neither (unsigned).
    signing_key: FilePath | None = None
    #: Its X.509 certificate (PEM): its issuer and serial go into each signature's KeyInfo.
    signing_certificate: FilePath | None = None
    #: Refuse unsigned DUIS requests (default: when any User has a `certificate`).
    require_signature: bool | None = None
    #: Folder holding `DUIS Schema V5.1.xsd` (and what it imports): when given, every
    #: request is validated against it and every document sent is checked first.
    schema_dir: FilePath | None = None
    #: Refuse a signature whose certificate is outside its validity dates (wall clock).
    check_certificate_dates: bool = True

    @model_validator(mode="after")
    def _pair(self) -> DuisConfig:
        if (self.signing_key is None) != (self.signing_certificate is None):
            missing = "signing_certificate" if self.signing_key else "signing_key"
            raise FieldError(
                (missing,), "give both signing_key and signing_certificate, or neither"
            )
        return self


class SchedulerConfig(Strict):
    #: An image strictly over this many bytes is large (MP230: 750 kB).
    large_image_threshold_bytes: int = Field(LARGE_IMAGE_BYTES, gt=0)
    #: Large-image 11.3 activations the DCC releases a day, across every User.
    large_images_per_day: int = Field(12_000, gt=0)
    #: Large-image activations a User may have released in one day without a schedule.
    user_daily_limit: int = Field(500, gt=0)
    #: Target response time, from the release of a batch to each device's answer.
    trt_seconds: float = Field(5 * 86_400.0, gt=0)
    #: Users' systems fail a request still open this long after submission.
    stale_after_seconds: float = Field(7 * 86_400.0, gt=0)
    #: Large images are not released inside these windows. The DCC's peak by default,
    #: 16:00-19:00 UK local time (MP230: large images must not add to peak traffic);
    #: `[]` for none.
    peak_windows: list[PeakWindow] = Field(
        default_factory=lambda: [PeakWindow(start_hour=16, end_hour=19)]
    )
    #: The IANA time zone the peak windows' hours are read in (daylight saving included).
    peak_timezone: str = "Europe/London"
    #: Days ahead a schedule proposal may reach before it is refused.
    schedule_horizon_days: int = Field(400, gt=0)
    #: Largest DUIS document accepted, in bytes.
    max_document_bytes: int = Field(16 * 1024 * 1024, gt=0)
    #: Callback delivery: first retry delay and attempts before giving up.
    callback_retry_seconds: float = Field(2.0, gt=0)
    callback_attempts: int = Field(8, gt=0)
    #: Users allowed to call the scheduler (none: Users are taken from the campaigns).
    users: list[UserConfig] = []
    #: DUIS signatures and schema validation.
    duis: DuisConfig = DuisConfig()
    #: How large images are released (smets1.config_policy): `{kind: mp230}` (the
    #: default), `{kind: no_limit}`, `{kind: equal_share, users: N}` or
    #: `{kind: spare_capacity, headroom: H}` (needs a `background:` section).
    policy: PolicyConfig = Mp230Policy()

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_kind(cls, value: object) -> object:
        return known_kind(value)

    @field_validator("peak_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"expected an IANA time zone such as Europe/London, got {value[:64]!r}"
            ) from None
        return value

    @model_validator(mode="after")
    def _admissible(self) -> SchedulerConfig:
        if self.stale_after_seconds <= self.trt_seconds:
            raise ValueError("stale_after_seconds must be longer than trt_seconds")
        ids = [u.id for u in self.users]
        if len(set(ids)) != len(ids):
            raise ValueError("users: two users share an id")
        tokens = [u.token for u in self.users if u.token]
        if len(set(tokens)) != len(tokens):
            raise ValueError("users: two users share a token")
        return self


class DcoConfig(Strict):
    #: Consecutive blocks sent in one frame.
    run_blocks: int = Field(64, gt=0, le=4096)
    max_concurrent_transfers: int = Field(5_000, gt=0)
    #: The DCO's outbound capacity: bytes a second it can send to devices, every frame
    #: (blocks, commands, background reads) in one first-in-first-out queue
    #: (dco_mock/pipe.py). None: unlimited, each frame goes at once and only the devices'
    #: links pace it.
    throughput_bytes_per_second: float | None = Field(None, gt=0)
    #: Over MQTT: outbound bytes queued (published, not yet acknowledged by the broker)
    #: before the DCO's sessions wait for room and new 11.3s are turned away (503).
    max_outbound_bytes: int = Field(32 * 2**20, gt=0)
    #: Over MQTT: bytes of blocks out to devices at once, not yet answered by them (the
    #: broker and the fleet hold them while the devices' links are slower than the DCO).
    max_in_flight_bytes: int = Field(128 * 2**20, gt=0)
    #: How long the DCO waits for a device to answer a query before asking again.
    reply_timeout_seconds: float = Field(7_200.0, gt=0)
    max_rounds: int = Field(8, gt=0)
    #: First wait after an unanswered INITIATE or 11.2; doubles on each further silence.
    retry_initial_seconds: float = Field(60.0, gt=0)
    retry_max_seconds: float = Field(3_600.0, gt=0)
    #: How long the DCO keeps trying a silent device before the 11.3 fails `offline`.
    give_up_seconds: float = Field(3 * 86_400.0, gt=0)
    #: Bearer token the scheduler presents on the DCO's HTTP API (the environment's
    #: SMETS1_DCO_TOKEN, when set, takes its place). Needed by `smets1 dco` and
    #: `smets1 scheduler`; the in-process `smets1 run` has no HTTP and ignores it.
    token: str = Field("", max_length=512, repr=False)
    #: SRV 11.1 processing at the DCO (`dco_mock.service.Dco.image_processing_seconds`):
    #: each image takes `image_processing_seconds` plus its size over
    #: `image_processing_bytes_per_second`, stretched by the DCO's load (11.3 transfers in
    #: flight or waiting over `max_concurrent_transfers`, times
    #: `image_processing_load_factor`), and waits its turn for one of
    #: `image_processing_workers`. A 1 MiB image on an idle DCO: 60 + 104.9 s.
    image_processing_seconds: float = Field(60.0, ge=0)
    image_processing_bytes_per_second: float = Field(10_000.0, gt=0)
    image_processing_load_factor: float = Field(4.0, ge=0)
    image_processing_workers: int = Field(1, gt=0, le=1_024)
    #: Requests the DCO's HTTP API serves at once, and connections the scheduler opens to
    #: each DCO worker (an 11.3 holds one for its whole transfer). Beyond it the DCO
    #: answers 503 with Retry-After, and the scheduler queues its calls.
    http_max_in_flight: int = Field(1_000, gt=0)

    @field_validator("token")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
            raise ValueError("a token is visible ASCII without spaces (it travels in a header)")
        return value


#: The DUIS schema the scheduler validates against, inside `scheduler.duis.schema_dir`.
DUIS_SCHEMA_FILE = "DUIS Schema V5.1.xsd"


def duis_file_problems(config: SchedulerConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with the files `config` names for DUIS signing (certificates, the
    signing key, the schema folder), each with the path of its field; [] if all is well.
    Paths are taken as they are: resolve them against the config's folder first."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[tuple[str, int], int] = {}
    for n, user in enumerate(config.users):
        if user.certificate is None:
            continue
        try:
            cert = load_certificate(user.certificate)
        except KeyFileError as exc:
            problems.append((("users", n, "certificate"), str(exc)))
            continue
        ident = issuer_serial(cert)
        if ident in seen:
            problems.append(
                (
                    ("users", n, "certificate"),
                    f"the certificate of users.{seen[ident]} too (issuer {ident[0]}, serial "
                    f"{ident[1]}); a certificate names one User",
                )
            )
        seen[ident] = n
    duis = config.duis
    key: ec.EllipticCurvePrivateKey | None = None
    signing_cert: x509.Certificate | None = None
    if duis.signing_key is not None:
        try:
            key = load_private_key(duis.signing_key)
        except KeyFileError as exc:
            problems.append((("duis", "signing_key"), str(exc)))
    if duis.signing_certificate is not None:
        try:
            signing_cert = load_certificate(duis.signing_certificate)
        except KeyFileError as exc:
            problems.append((("duis", "signing_certificate"), str(exc)))
    if key is not None and signing_cert is not None:
        try:
            check_pair(key, signing_cert)
        except KeyFileError as exc:
            problems.append((("duis", "signing_key"), f"{duis.signing_key}: {exc}"))
    if duis.schema_dir is not None and not (duis.schema_dir / DUIS_SCHEMA_FILE).is_file():
        what = "is not a folder" if not duis.schema_dir.is_dir() else "has no"
        problems.append(
            (
                ("duis", "schema_dir"),
                f"{duis.schema_dir} {what}"
                + (f" {DUIS_SCHEMA_FILE!r}" if what == "has no" else "")
                + f"; expected the folder of the DUIS schemas ({DUIS_SCHEMA_FILE!r} and the"
                " xmldsig schema it imports)",
            )
        )
    return problems
