"""MqttBus: the `Bus` over a real MQTT broker (aiomqtt 2.x, MQTT v5).

Delivery guarantees, and why:

* **QoS 1, persistent session.** Every publish and subscription is QoS 1 and the session
  outlives a dropped connection for `SESSION_EXPIRY_SECONDS`. Client ids are unique per
  process, so a new process never inherits a stale session, and every connect asks for
  the session back (clean start off: Mosquitto 2.0 does not restore, after a restart, a
  v5 session that began with clean start on). A subscriber that is away for a moment, or
  a broker that restarts with persistence on, keeps the frames that were on their way.
  QoS 0 would save a PUBACK a message, but every frame lost to a reconnect would then
  cost a DCO reply timeout (two simulated hours by default) before the retry.
* **At least once, then de-duplicated.** A publish not acknowledged when the connection
  drops is sent again after the reconnect, and QoS 1 redelivers what a broker saved
  unacknowledged (a restarted Mosquitto resends a whole in-flight window). The protocol
  copes with a duplicate (a device ignores blocks it holds and answers a repeated
  INITIATE, QUERY or ACTIVATE as it stands; the DCO drops answers to closed requests),
  but a stale frame replayed after a restart is still a surprise worth avoiding: each
  payload travels in a 17-byte `Envelope`, `0xE7, sender u32, seq u32, sent_at f64`
  (big-endian), and a receiver drops a (sender, seq) it has seen. Handlers see the frame
  alone. (An MQTT v5 user property would do the same, but paho builds and parses those at
  half the rate.)
* **Every message says when it was sent, in simulated time.** `sent_at` is the sender's
  clock when `publish()` took the (first) frame; the receiver's clock when it hands the
  frames to their handlers, less `sent_at`, is the message's end-to-end lateness: the
  sender's queue, the broker's, the network and the receiver's event loop together
  (smets1.lateness). `lateness` keeps it. Version 1 envelopes (`0xE5`, `0xE6`, without a
  send time) are refused by name.
* **Frames that queue up travel together.** A frame published while an earlier one
  for the same topic still waits in the queue joins it, up to `BATCH_MAX_BYTES` (2 MiB):
  envelope `0xE8, sender u32, seq u32, sent_at f64`, then a `BatchEntry` (`length u32,
  frame`) per frame (`join_batch`, `split_batch`). aiomqtt and paho spend about as much
  per message as on 64 KiB of payload, and a DCO publishes a whole round at once (every
  run of blocks a device is missing, then its QUERY: 1 MiB in 16 runs of 64 KiB on the
  demo day), so under load a round leaves as one message instead of seventeen: on the
  distributed demo day this took the DCO's MQTT messages from 220,111 to 24,244 and its
  CPU from 68 to 45 s. An idle bus sends each frame at once, alone. The frames of a batch
  share its `sent_at` (the first frame's), so a joiner's lateness is over-, never
  under-counted. Order holds per topic (as MQTT promises it), not across topics.
  Counters count frames; `mqtt_publishes` and `mqtt_received` count MQTT messages.
* **The protocol recovers what the transport loses.** A broker killed without
  persistence loses what it held; the DCO's bitmap-and-resume and its retries after a
  silence recover the transfer, not QoS.

Shape (STYLE 8): `start()` spawns one task that connects, subscribes, and runs a
TaskGroup of the connection's background tasks (the publisher and a disconnect watch);
when the connection drops the group ends, and the task reconnects with exponential
backoff, subscribes again, and sends on from its queue. `publish()` never blocks: it puts
the message in an `asyncio.Queue` the publisher drains. Incoming messages are handed to
the handlers straight from the client's read callback (through `queue_type`), so a
message acknowledged to the broker has always reached its handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import ssl
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smets1.broker_url import BrokerUrl
from smets1.bus import Bus, BusCounters, Handler, topic_matches
from smets1.clock import Clock, RealClock
from smets1.errors import BusError, EnvelopeError
from smets1.lateness import LatenessMeter
from smets1.paho_copies import install as _install_paho_copies
from smets1.structs import Field, LVBytes, Struct, binary, f64, u8, u32

log = logging.getLogger("smets1.mqtt")

#: paho copies each large payload less (smets1.paho_copies).
_install_paho_copies()


class _LateAcknowledgement(logging.Filter):
    """aiomqtt logs, with a traceback, an acknowledgement that arrives for a request it
    has already given up (a SUBSCRIBE or PUBLISH whose waiter was cancelled because the
    process is stopping): harmless, and a traceback in a role's log reads as a crash. It
    is kept, as one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Unexpected message ID"):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return log.isEnabledFor(logging.DEBUG)
        return True


log.addFilter(_LateAcknowledgement())

QOS = 1
#: How long the broker keeps a disconnected client's session (subscriptions, queued messages).
SESSION_EXPIRY_SECONDS = 300
KEEPALIVE_SECONDS = 15
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 10.0
#: QoS 1 publishes waiting for their PUBACK at once (aiomqtt's bookkeeping is linear in it).
PUBLISH_WINDOW = 64
#: A publish waits for its PUBACK without a timer of its own: a broker that stops
#: answering is found by the keepalive (`KEEPALIVE_SECONDS`: paho drops a connection
#: whose PINGREQ goes unanswered), which ends the connection and every publish with it.
#: (A 60 s timeout per publish cost a timer and a callback a message.)
PUBLISH_TIMEOUT_SECONDS = math.inf
#: Message numbers remembered per sender to drop redeliveries.
DEDUP_WINDOW = 16_384
#: First byte of the envelope (a frame starts with its format version, smets1.wire's
#: FRAME_VERSION, far below). It is the envelope's version too: 0xE5 and 0xE6 were
#: version 1, without `sent_at`.
ENVELOPE_MAGIC = 0xE7
#: First byte of the envelope of several frames, each behind its length (u32, big-endian).
BATCH_MAGIC = 0xE8
#: The magics of version 1, named in the error that refuses them.
OLD_MAGICS = (0xE5, 0xE6)
#: Frames join a queued message for their topic while it stays under this many bytes;
#: a frame this large or larger travels alone. A DCO's round of a 1 MiB image fits.
BATCH_MAX_BYTES = 2 * 2**20

#: On a quiet bus, a lone frame waits this long (wall seconds) for more to join its
#: message before it goes: a fleet shard's answers and a DCO's rounds then share MQTT
#: messages even when nothing queues. It adds at most this much to a frame's lateness.
LINGER_SECONDS = 0.002

#: Outbound bytes (frames accepted by `publish` and not yet acknowledged by the broker)
#: a bus holds before `has_room` says no; producers await `wait_for_room` (default).
MAX_QUEUED_BYTES = 32 * 2**20

#: How long `close()` waits for queued messages to go out.
FLUSH_SECONDS = 5.0


@dataclass(slots=True)
class MqttCounters(BusCounters):
    """BusCounters plus what only a network transport has."""

    messages_received: int = 0
    bytes_received: int = 0
    duplicates_dropped: int = 0
    foreign_messages: int = 0
    republished: int = 0
    #: MQTT messages sent and taken (a message may carry several frames).
    mqtt_publishes: int = 0
    mqtt_received: int = 0
    connects: int = 0
    connection_losses: int = 0
    handler_errors: int = 0
    bad_batches: int = 0
    #: Frame bytes accepted by `publish` and not yet acknowledged by the broker, now and
    #: at most; `max_queued_bytes` is the bound producers wait for room under.
    queued_bytes: int = 0
    peak_queued_bytes: int = 0
    max_queued_bytes: int = 0
    #: Times a producer waited for room (`wait_for_room` found the queue over its bound).
    room_waits: int = 0


def _known_magic(magic: int, _: Mapping[str, Any]) -> str | None:
    if magic in (ENVELOPE_MAGIC, BATCH_MAGIC):
        return None
    old = " (a version 1 envelope, without a send time)" if magic in OLD_MAGICS else ""
    return f"expected 0x{ENVELOPE_MAGIC:02X} or 0x{BATCH_MAGIC:02X}, got 0x{magic:02X}{old}"


def _finite_time(sent_at: float, _: Mapping[str, Any]) -> str | None:
    if math.isfinite(sent_at):
        return None
    return f"expected a finite simulated time, got {sent_at!r}"


@binary(endian=">", error=EnvelopeError)
class Envelope(Struct):
    """What an MqttBus puts in front of the frames of a message: one frame alone
    (`ENVELOPE_MAGIC`, the frame follows) or several (`BATCH_MAGIC`, `BatchEntry`s follow),
    who sent it with which number, to drop redeliveries, and when (simulated Unix
    seconds), to measure how late it arrives."""

    magic: Annotated[int, u8, Field(check=_known_magic)]
    sender: Annotated[int, u32]
    seq: Annotated[int, u32]
    sent_at: Annotated[float, f64, Field(check=_finite_time)]


@binary(endian=">", error=EnvelopeError)
class BatchEntry(Struct):
    """One frame of a batch, behind its length."""

    frame: Annotated[bytes | memoryview, LVBytes(u32)]


ENVELOPE_BYTES = Envelope.LAYOUT.size()
_LENGTH = struct.Struct(">I")  # BatchEntry's length prefix


def join_batch(sender: int, seq: int, frames: Sequence[bytes], sent_at: float) -> bytes:
    """One MQTT message carrying `frames`, sent at simulated time `sent_at`: a lone
    frame in the plain envelope, several each behind its length. `split_batch` takes it
    apart."""
    if len(frames) == 1:
        return Envelope(ENVELOPE_MAGIC, sender, seq, sent_at).serialize() + frames[0]
    # Each frame behind its length (`BatchEntry`'s layout), copied once, into the join.
    parts: list[bytes | memoryview] = [Envelope(BATCH_MAGIC, sender, seq, sent_at).serialize()]
    for frame in frames:
        parts.append(_LENGTH.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def split_batch(
    payload: bytes | bytearray | memoryview,
) -> tuple[list[bytes], EnvelopeError | None]:
    """The frames of a message `join_batch` built, and the error where it broke (None if
    it is whole). The frames before a break are kept: each is whole and stands alone."""
    view = memoryview(payload)
    try:
        envelope, offset = Envelope.decode_at(view, 0)
    except EnvelopeError as exc:
        return [], exc
    if envelope.magic == ENVELOPE_MAGIC:
        return [bytes(view[offset:])], None
    frames: list[bytes] = []
    end = len(view)
    while offset < end:
        try:
            entry, offset = BatchEntry.decode_at(view, offset)
        except EnvelopeError as exc:
            return frames, exc
        frames.append(bytes(entry.frame))
    return frames, None


@dataclass(slots=True)
class _Outgoing:
    seq: int
    topic: str
    payload: bytes  # enveloped; for a batch, built when the publisher takes it
    queued_at: float  # loop time of publish(), for the delay the transport adds
    frames: list[bytes] | None = None  # a batch still open to more frames
    frame_count: int = 1
    frame_bytes: int = 0
    sender: int = 0
    retain: bool = False  # the broker keeps it for later subscribers (publish_retained)
    sent_at: float = 0.0  # simulated time of the first frame's publish()

    def close_batch(self) -> None:
        """Freeze the frames into the payload."""
        frames = self.frames
        if frames is not None:
            self.frames = None
            self.payload = join_batch(self.sender, self.seq & 0xFFFF_FFFF, frames, self.sent_at)


@dataclass(slots=True)
class _Subscription:
    topic_filter: str  # as sent to the broker, maybe `$share/<group>/...`
    match_filter: str  # what a message's topic is matched against
    handler: Handler


class RecentNumbers:
    """The last `DEDUP_WINDOW` message numbers seen from one sender."""

    __slots__ = ("order", "seen")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.order: deque[int] = deque()

    def is_new(self, seq: int) -> bool:
        if seq in self.seen:
            return False
        self.seen.add(seq)
        self.order.append(seq)
        if len(self.order) > DEDUP_WINDOW:
            self.seen.discard(self.order.popleft())
        return True


def _match_filter(topic_filter: str) -> str:
    """`$share/<group>/<filter>` matches topics as `<filter>` does."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3:
            raise BusError(f"shared subscription without a topic filter: {topic_filter!r}")
        return parts[2]
    return topic_filter


def _tls_context(broker: BrokerUrl) -> ssl.SSLContext | None:
    if not broker.tls:
        return None
    ctx = ssl.create_default_context(cafile=broker.ca_file)
    if broker.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttBus(Bus):
    """Publish/subscribe of binary frames through an MQTT broker; reconnects by itself.

    `clock` stamps each message's send time and measures its lateness on arrival; the
    processes of a run share one (default: wall time, as speed 1 would)."""

    counters: MqttCounters

    def __init__(
        self,
        broker: BrokerUrl,
        client_id: str,
        *,
        connect_timeout_seconds: float | None = 30.0,
        clock: Clock | None = None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        if max_queued_bytes < 1:
            raise ValueError(f"max_queued_bytes must be at least 1, got {max_queued_bytes}")
        self.broker = broker
        self.client_id = client_id
        self.connect_timeout_seconds = connect_timeout_seconds
        self.clock: Clock = clock if clock is not None else RealClock()
        self.counters = MqttCounters(max_queued_bytes=max_queued_bytes)
        self.max_queued_bytes = max_queued_bytes
        #: How long a lone frame waits, on a quiet bus, for others to join its message.
        self.linger_seconds = linger_seconds
        #: Producers waiting for room, in turn: (bytes, woken when they fit).
        self._room_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        #: Bytes of waiters woken and not yet back to publish them.
        self._room_reserved = 0
        #: End-to-end lateness of every message received (smets1.lateness).
        self.lateness = LatenessMeter()
        #: While False, messages are not measured: a follower's clock is not the run's
        #: until the leader's announcement arrives (smets1.shared_clock sets it).
        self.measuring = True
        self.last_error: str | None = None
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue()
        #: Per topic, the queued message that later small frames may still join.
        self._open: dict[str, _Outgoing] = {}
        self._pending_frames = 0
        self._retry: deque[_Outgoing] = deque()  # unacknowledged when the link dropped
        self._unacked: dict[int, _Outgoing] = {}
        self._subs: list[_Subscription] = []
        self._routes: dict[str, list[Handler]] = {}
        self._seq = 0
        self._sender = random.getrandbits(32)
        self._seen: dict[int, RecentNumbers] = {}
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()  # set while not connected (from the start)
        self._disconnected.set()
        self._drained_event = asyncio.Event()  # set while nothing waits for the broker
        self._drained_event.set()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._worst_delay = 0.0

    # -- Bus ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Frames accepted by `publish` and not yet acknowledged by the broker."""
        return self._pending_frames

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether `nbytes` more stay within `max_queued_bytes` now, after the producers
        already waiting; a message larger than the bound has room only when nothing is
        queued (it then goes alone)."""
        if self._room_waiters:
            return False
        queued = self.counters.queued_bytes + self._room_reserved
        return queued + nbytes <= self.max_queued_bytes or queued == 0

    async def wait_for_room(self, nbytes: int = 0) -> None:
        """Until `nbytes` more fit: as the broker acknowledges queued messages. Waiters are
        served in turn, each woken only once its bytes fit (not all at each
        acknowledgement); the caller is expected to publish them as soon as it returns."""
        if self.has_room(nbytes):
            return
        self.counters.room_waits += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append((nbytes, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._room_reserved -= nbytes  # woken, then cancelled: pass the room on
                self._wake_room()
            raise
        self._room_reserved -= nbytes

    def _wake_room(self) -> None:
        """Wake the waiters at the head of the line whose bytes now fit."""
        waiters = self._room_waiters
        bound = self.max_queued_bytes
        while waiters:
            nbytes, waiter = waiters[0]
            if waiter.done():  # cancelled while it waited
                waiters.popleft()
                continue
            queued = self.counters.queued_bytes + self._room_reserved
            if queued + nbytes > bound and queued != 0:
                return
            waiters.popleft()
            self._room_reserved += nbytes
            waiter.set_result(None)

    def _queue_bytes(self, size: int) -> None:
        c = self.counters
        c.queued_bytes += size
        if c.queued_bytes > c.peak_queued_bytes:
            c.peak_queued_bytes = c.queued_bytes

    def publish(self, topic: str, payload: bytes, sent_at: float | None = None) -> None:
        if self._closed:
            raise BusError(f"publish on closed bus (topic {topic})")
        size = len(payload)
        self._pending_frames += 1
        self._drained_event.clear()
        self._queue_bytes(size)
        if size < BATCH_MAX_BYTES:
            batch = self._open.get(topic)
            if batch is not None and batch.frames is not None:
                if batch.frame_bytes + 4 * batch.frame_count + size + 4 <= BATCH_MAX_BYTES:
                    if sent_at is not None and sent_at < batch.sent_at:
                        batch.sent_at = sent_at  # the batch is as late as its latest frame
                    batch.frames.append(bytes(payload))
                    batch.frame_count += 1
                    batch.frame_bytes += size
                    return
        self._seq += 1
        now = asyncio.get_running_loop().time()
        if sent_at is None:
            sent_at = self.clock.now()
        if size < BATCH_MAX_BYTES:
            msg = _Outgoing(
                self._seq, topic, b"", now, [bytes(payload)], 1, size, self._sender, sent_at=sent_at
            )
            self._open[topic] = msg
        else:
            whole = join_batch(self._sender, self._seq & 0xFFFF_FFFF, [payload], sent_at)
            msg = _Outgoing(
                self._seq, topic, whole, now, None, 1, size, self._sender, sent_at=sent_at
            )
            self._open.pop(topic, None)  # later frames must not overtake this one
        self._queue.put_nowait(msg)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish one frame, alone, that the broker keeps for whoever subscribes later
        (the shared clock's announcement); queued as `publish` does."""
        if self._closed:
            raise BusError(f"publish on closed bus (topic {topic})")
        self._pending_frames += 1
        self._drained_event.clear()
        self._queue_bytes(len(payload))
        self._seq += 1
        sent_at = self.clock.now()
        whole = join_batch(self._sender, self._seq & 0xFFFF_FFFF, [payload], sent_at)
        now = asyncio.get_running_loop().time()
        msg = _Outgoing(
            self._seq,
            topic,
            whole,
            now,
            None,
            1,
            len(payload),
            self._sender,
            retain=True,
            sent_at=sent_at,
        )
        self._open.pop(topic, None)  # later frames must not overtake this one
        self._queue.put_nowait(msg)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        known = any(s.topic_filter == topic_filter for s in self._subs)
        self._subs.append(_Subscription(topic_filter, _match_filter(topic_filter), handler))
        self._routes.clear()
        client = self._client
        if client is not None and self._connected.is_set() and not known:
            # Connected already: subscribe now. A failure here is a lost connection,
            # and the reconnect subscribes every filter again.
            task = asyncio.get_running_loop().create_task(self._subscribe_one(client, topic_filter))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"mqtt {self.client_id}"
        )
        if self.connect_timeout_seconds is None:
            await self._connected.wait()
            return
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout_seconds)
        except TimeoutError:
            await self._stop_task()
            raise BusError(
                f"cannot reach the MQTT broker {self.broker} within "
                f"{self.connect_timeout_seconds:g} s: {self.last_error or 'no answer'}"
            ) from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_drained(), FLUSH_SECONDS)
            client = self._client
            if client is not None:
                # A session that lingers with no subscription queues nothing for us.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    for f in sorted({s.topic_filter for s in self._subs}):
                        await client.unsubscribe(f, timeout=2.0)
        await self._stop_task()
        self._subs.clear()
        self._routes.clear()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        """Until the connection to the broker is down (at once if it is)."""
        await self._disconnected.wait()

    async def wait_drained(self) -> None:
        """Until every frame accepted by `publish` has been acknowledged by the broker."""
        await self._drained_event.wait()

    def take_worst_delay(self) -> float:
        """Wall seconds the slowest message since the last call (or still queued) waited
        between `publish()` and the broker's acknowledgement; resets the measure."""
        worst = self._worst_delay
        self._worst_delay = 0.0
        now = asyncio.get_running_loop().time()
        for pending in (self._retry, self._unacked.values()):
            for msg in pending:
                worst = max(worst, now - msg.queued_at)
                break  # the oldest comes first
        if not self._queue.empty():
            worst = max(worst, now - self._queue._queue[0].queued_at)  # type: ignore[attr-defined]
        return worst

    # -- the connection -------------------------------------------------------------------

    async def _stop_task(self) -> None:
        for task in [self._task, *self._side_tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._task, *self._side_tasks] if t is not None),
            return_exceptions=True,
        )
        self._task = None

    def _make_client(self) -> aiomqtt.Client:
        b = self.broker
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        bus = self

        class _Dispatch(asyncio.Queue[aiomqtt.Message]):
            """Hands each message to the bus as the client reads it."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                bus._deliver(item)

        client = aiomqtt.Client(
            b.host,
            b.port,
            username=b.username,
            password=b.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            keepalive=KEEPALIVE_SECONDS,
            queue_type=_Dispatch,
            max_inflight_messages=PUBLISH_WINDOW,
            tls_context=_tls_context(b),
            # Without it Nagle holds a small publish back until the broker ACKs the
            # last one, which Linux's delayed ACK puts off by up to 40 ms: measured as
            # 40-55 ms wall of lateness on most frames of a quiet run.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=log,
        )
        # A full publish window is normal here, not a warning.
        client.pending_calls_threshold = 2 * PUBLISH_WINDOW
        return client

    async def _run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while True:
            client = self._make_client()
            try:
                async with client:
                    delay = BACKOFF_FIRST_SECONDS
                    self.counters.connects += 1
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self._lost(exc)
            except OSError as exc:
                self._lost(exc)
            except Exception as exc:  # a bug must not end the bus: log it and reconnect
                log.exception("%s: MQTT connection failed", self.client_id)
                self._lost(exc)
            finally:
                self._client = None
                self._connected.clear()
                self._disconnected.set()
                self._requeue_unacked()
            # Transport backoff is wall time, not simulated time: the broker's clock.
            await asyncio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _lost(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__
        if self.counters.connects:
            self.counters.connection_losses += 1
        log.warning(
            "%s: MQTT connection to %s lost or refused (%s); %d message(s) waiting, reconnecting",
            self.client_id,
            self.broker,
            self.last_error,
            self.backlog,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        for f in sorted({s.topic_filter for s in self._subs}):
            await client.subscribe(f, qos=QOS)
        self._client = client
        self._connected.set()
        self._disconnected.clear()
        log.info("%s: connected to %s", self.client_id, self.broker)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publisher(client, tg))
                tg.create_task(self._watch(client))
        except* (aiomqtt.MqttError, OSError) as group:
            self._lost(group.exceptions[0])

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Ends, with MqttError, when the connection drops (messages go to `_deliver`)."""
        async for _ in client.messages:
            pass

    async def _subscribe_one(self, client: aiomqtt.Client, topic_filter: str) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.subscribe(topic_filter, qos=QOS)

    def _requeue_unacked(self) -> None:
        if not self._unacked:
            return
        self.counters.republished += len(self._unacked)
        again = sorted([*self._retry, *self._unacked.values()], key=lambda m: m.seq)
        self._unacked.clear()
        self._retry = deque(again)

    async def _publisher(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        window = asyncio.Semaphore(PUBLISH_WINDOW)
        while True:
            msg = self._retry.popleft() if self._retry else await self._queue.get()
            # Unacknowledged from here: a connection lost from now on sends it again.
            self._unacked[msg.seq] = msg
            if msg.frames is not None:
                if self.linger_seconds and self._queue.empty() and msg.frame_count == 1:
                    # A quiet bus: the frames of the next moment join this one's message
                    # (a loaded bus batches without waiting: its queue is never empty).
                    await asyncio.sleep(self.linger_seconds)
                if self._open.get(msg.topic) is msg:
                    del self._open[msg.topic]
                msg.close_batch()
            await window.acquire()
            tg.create_task(self._publish_one(client, msg, window))

    async def _publish_one(
        self, client: aiomqtt.Client, msg: _Outgoing, window: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(
                msg.topic, msg.payload, qos=QOS, retain=msg.retain, timeout=PUBLISH_TIMEOUT_SECONDS
            )
        finally:
            window.release()
        if self._unacked.pop(msg.seq, None) is not None:
            delay = asyncio.get_running_loop().time() - msg.queued_at
            if delay > self._worst_delay:
                self._worst_delay = delay
            self._pending_frames -= msg.frame_count
            if not self._pending_frames:
                self._drained_event.set()
            c = self.counters
            c.queued_bytes -= msg.frame_bytes
            if self._room_waiters:
                self._wake_room()
            c.mqtt_publishes += 1
            c.messages_published += msg.frame_count
            c.bytes_published += msg.frame_bytes

    # -- incoming -------------------------------------------------------------------------

    def _handlers(self, topic: str) -> list[Handler]:
        handlers = self._routes.get(topic)
        if handlers is None:
            handlers = [s.handler for s in self._subs if topic_matches(s.match_filter, topic)]
            self._routes[topic] = handlers
        return handlers

    def _deliver(self, message: aiomqtt.Message) -> None:
        c = self.counters
        payload = message.payload
        if not isinstance(payload, bytes | bytearray | memoryview):
            return
        c.mqtt_received += 1
        try:
            envelope, _ = Envelope.decode_at(memoryview(payload), 0)
        except EnvelopeError:
            c.foreign_messages += 1  # from a publisher that is not an MqttBus: as it is
            frames = [bytes(payload)]
        else:
            recent = self._seen.get(envelope.sender)
            if recent is None:
                recent = self._seen[envelope.sender] = RecentNumbers()
            if not recent.is_new(envelope.seq):
                c.duplicates_dropped += 1
                return
            # Handlers run below, now: this is the lateness at handling. A retained
            # message (the clock's announcement) is old by design, not late.
            if self.measuring and not message.retain:
                self.lateness.add(self.clock.now() - envelope.sent_at)
            frames, broken = split_batch(payload)
            if broken is not None:
                c.bad_batches += 1
                log.warning(
                    "%s: batch of %d bytes broken (%s); %d frame(s) kept",
                    self.client_id,
                    len(payload),
                    broken,
                    len(frames),
                )
        topic = message.topic.value
        handlers = self._handlers(topic)
        for data in frames:
            c.messages_received += 1
            c.bytes_received += len(data)
            for handler in handlers:
                c.messages_delivered += 1
                try:
                    handler(topic, data)
                except Exception:
                    c.handler_errors += 1
                    log.exception("%s: handler for %s failed", self.client_id, topic)
