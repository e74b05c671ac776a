"""Realistic VideoSDK track-recording deliveries, signed with a bench key, and request files.

The stream interleaves thousands of tracks at once, as a busy account would: many sessions
and participants, the four kinds, full lifecycles (starting, started, stopping, stopped with
one or two files), exact duplicates, reorders, restarts and the odd failure. That order is
`spread`; in the `bursts` order each track's deliveries come back to back instead, as when
-starting and -started arrive within milliseconds or a retry storm repeats one at once.
"""

from __future__ import annotations

import base64
import os
import pickle
import random
import shutil
import string
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

INTAKE_PATH = "/webhooks/videosdk"
TYPE_PREFIX = "participant-track-recording-"
KIND_ODDS = (("audio", 0.95), ("video", 0.85), ("screen_video", 0.08), ("screen_audio", 0.04))
DUPLICATE_SHARE = 0.05  # an event delivered twice, byte for byte
REORDER_SHARE = 0.05  # started before starting, or stopped before stopping
RESTART_SHARE = 0.05  # a second start-to-stop run of the same track
FAILED_SHARE = 0.01  # a run that ends in -failed instead of -stopping/-stopped
_ALNUM = string.ascii_lowercase + string.digits
ORDERS = ("spread", "bursts")


@dataclass(frozen=True, slots=True)
class Delivery:
    body: bytes
    signature: str


@dataclass(slots=True)
class _Track:
    pending: deque[bytes] = field(default_factory=deque)


class WebhookStream:
    """An endless, seeded stream of webhook bodies; `take(n)` returns the next n."""

    def __init__(self, seed: int, active_tracks: int = 3000) -> None:
        self._rng = random.Random(seed)
        self._active: list[_Track] = []
        self._target = active_tracks
        self.sessions = 0
        self.tracks = 0
        self.emitted = 0

    def take(self, count: int) -> list[bytes]:
        out: list[bytes] = []
        rng = self._rng
        while len(out) < count:
            while len(self._active) < self._target:
                self._active.extend(self._new_session())
            index = rng.randrange(len(self._active))
            track = self._active[index]
            body = track.pending.popleft()
            out.append(body)
            if rng.random() < DUPLICATE_SHARE:
                # Redelivered before the track moves on: a restart rule would otherwise
                # turn a late repeat of -started into a new recording, not a duplicate.
                track.pending.appendleft(body)
            if not track.pending:
                self._active[index] = self._active[-1]
                self._active.pop()
        self.emitted += len(out)
        return out

    def _id(self, length: int, alphabet: str = _ALNUM) -> str:
        return "".join(self._rng.choices(alphabet, k=length))

    def _new_session(self) -> list[_Track]:
        rng = self._rng
        self.sessions += 1
        meeting_id = f"{self._id(4)}-{self._id(4)}-{self._id(4)}"
        session_id = f"{rng.getrandbits(96):024x}"
        tracks: list[_Track] = []
        for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 8))):
            participant_id = self._id(8)
            kinds = [kind for kind, odds in KIND_ODDS if rng.random() < odds] or ["audio"]
            for kind in kinds:
                ids = {
                    "meetingId": meeting_id,
                    "sessionId": session_id,
                    "participantId": participant_id,
                    "kind": kind,
                }
                track = _Track()
                runs = 2 if rng.random() < RESTART_SHARE else 1
                for _run in range(runs):
                    track.pending.extend(self._lifecycle(ids))
                tracks.append(track)
        self.tracks += len(tracks)
        return tracks

    def _lifecycle(self, ids: dict[str, str]) -> list[bytes]:
        rng = self._rng
        if rng.random() < FAILED_SHARE:
            statuses = ["starting", "started", "failed"]
        else:
            statuses = ["starting", "started", "stopping", "stopped"]
            if rng.random() < REORDER_SHARE / 2:
                statuses[2], statuses[3] = statuses[3], statuses[2]
        if rng.random() < REORDER_SHARE / 2:
            statuses[0], statuses[1] = statuses[1], statuses[0]
        bodies = []
        for status in statuses:
            data: dict[str, object] = dict(ids)
            if status == "stopped":
                data["fileDetails"] = [self._file() for _ in range(rng.choice((1, 1, 1, 2)))]
            bodies.append(orjson.dumps({"webhookType": TYPE_PREFIX + status, "data": data}))
        return bodies

    def _file(self) -> dict[str, str]:
        name = f"{self._rng.getrandbits(96):024x}"
        return {
            "filePath": f"/encoded/videos/{name}.mp4",
            "fileUrl": f"https://cdn.videosdk.live/encoded/videos/{name}.mp4",
        }


class BurstStream(WebhookStream):
    """The same sessions and tracks, in bursts: a track's deliveries (its runs, with the
    exact duplicates right after their originals) back to back, then another track's.
    The pool of live tracks only shuffles which track comes next."""

    def __init__(self, seed: int, active_tracks: int = 3000) -> None:
        super().__init__(seed, active_tracks)
        self._rest: deque[bytes] = deque()  # what `take(count)` cut off the last burst

    def take(self, count: int) -> list[bytes]:
        out: list[bytes] = []
        rng = self._rng
        while len(out) < count:
            if not self._rest:
                while len(self._active) < self._target:
                    self._active.extend(self._new_session())
                index = rng.randrange(len(self._active))
                track = self._active[index]
                self._active[index] = self._active[-1]
                self._active.pop()
                while track.pending:
                    body = track.pending.popleft()
                    self._rest.append(body)
                    if rng.random() < DUPLICATE_SHARE:
                        track.pending.appendleft(body)
            while self._rest and len(out) < count:
                out.append(self._rest.popleft())
        self.emitted += len(out)
        return out


def make_stream(order: str, seed: int) -> WebhookStream:
    if order == "spread":
        return WebhookStream(seed)
    if order == "bursts":
        return BurstStream(seed)
    raise ValueError(f"unknown order {order!r}; choose from {ORDERS}")


def track_of(body: bytes) -> tuple[str, str, str]:
    data = orjson.loads(body)["data"]
    return data["sessionId"], data["participantId"], data["kind"]


def split_bursts(deliveries: Iterable[Delivery]) -> list[list[Delivery]]:
    """Runs of consecutive deliveries of one track. In the bursts order a track is drained
    in one go, so each run is one burst (the first and last may be cut by `take`)."""
    out: list[list[Delivery]] = []
    last: tuple[str, str, str] | None = None
    for delivery in deliveries:
        track = track_of(delivery.body)
        if track != last:
            out.append([])
            last = track
        out[-1].append(delivery)
    return out


def deal_bursts(deliveries: Sequence[Delivery], threads: int) -> list[Delivery]:
    """The lines of a request file for `threads` wrk threads, which take lines k, k+T,
    k+2T... (requests.lua): each burst goes whole to one thread, whose connections then
    send it together. The threads' shares are cut to one length (a few deliveries at the
    end are not used); the order within each share is the stream's."""
    if threads <= 1:
        return list(deliveries)
    shares: list[list[Delivery]] = [[] for _ in range(threads)]
    for burst in split_bursts(deliveries):
        min(shares, key=len).extend(burst)
    length = min(len(share) for share in shares)
    return [share[i] for i in range(length) for share in shares]


# Signing runs in worker processes; each loads the key once.
_worker_key: rsa.RSAPrivateKey | None = None


def _load_worker_key(private_pem: bytes) -> None:
    global _worker_key
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    _worker_key = key


def _sign_chunk(bodies: Sequence[bytes]) -> list[str]:
    assert _worker_key is not None
    key = _worker_key
    return [
        base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
        for body in bodies
    ]


class BenchSigner:
    """An RSA-2048 pair made for this run; signs the way VideoSDK does (PKCS#1 v1.5, SHA-256)."""

    def __init__(self, private_pem: bytes | None = None) -> None:
        if private_pem is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            loaded = serialization.load_pem_private_key(private_pem, password=None)
            assert isinstance(loaded, rsa.RSAPrivateKey)
            self._key = loaded
        self.private_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.public_pem = (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self._pool: Executor | None = None

    def __enter__(self) -> BenchSigner:
        # spawn, not fork: the bench may hold threads and event loops when it signs.
        self._pool = ProcessPoolExecutor(
            max_workers=os.cpu_count() or 1,
            mp_context=get_context("spawn"),
            initializer=_load_worker_key,
            initargs=(self.private_pem,),
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def sign(self, bodies: Sequence[bytes]) -> list[Delivery]:
        assert self._pool is not None, "use the signer as a context manager"
        chunk = 500
        chunks = [bodies[i : i + chunk] for i in range(0, len(bodies), chunk)]
        signatures: list[str] = []
        for part in self._pool.map(_sign_chunk, chunks):
            signatures.extend(part)
        return [
            Delivery(body, signature) for body, signature in zip(bodies, signatures, strict=True)
        ]


CORPUS_VERSION = 1  # bump when WebhookStream changes what it generates


def cache_name(order: str, seed: int) -> str:
    """The spread corpus keeps the name it had before orders existed, so its cache stays."""
    tag = "" if order == "spread" else f"-{order}"
    return f"v{CORPUS_VERSION}{tag}-seed{seed}"


class Corpus:
    """Signed deliveries handed out in stream order, none twice in one run.

    Signing costs ~1 ms of CPU per delivery, so what was signed is kept on disk (bench key,
    stream state, signed tape) and reused by the next run with the same seed: safe because
    each run gets a fresh database. Pass cache_dir=None to sign afresh. A corpus given
    another's `signer` shares its key (one key for the server to verify) and its signing
    processes; its cache is reused only if it was signed with that key.
    """

    def __init__(
        self,
        seed: int,
        cache_dir: Path | None,
        log: Callable[[str], None],
        order: str = "spread",
        signer: BenchSigner | None = None,
    ) -> None:
        self._log = log
        self._dir = None if cache_dir is None else cache_dir / cache_name(order, seed)
        self._tape: list[Delivery] = []
        self._position = 0
        private_pem = None
        self._stream = make_stream(order, seed)
        if self._dir is not None and (self._dir / "key.pem").exists():
            try:
                private_pem = (self._dir / "key.pem").read_bytes()
                with (self._dir / "stream.pickle").open("rb") as f:
                    stream = pickle.load(f)
                tape = self._read_tape(self._dir / "tape.tsv")
                same_key = signer is None or signer.private_pem == private_pem
                if same_key and type(stream) is type(self._stream) and len(tape) == stream.emitted:
                    self._stream, self._tape = stream, tape
                    log(f"corpus: {len(tape):,} signed deliveries reused from {self._dir}")
                else:
                    private_pem = None
            except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError):
                private_pem = None
        if private_pem is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir.mkdir(parents=True)
        self._owns_signer = signer is None
        self.signer = BenchSigner(private_pem) if signer is None else signer
        if self._dir is not None and private_pem is None:
            key_file = self._dir / "key.pem"
            key_file.write_bytes(self.signer.private_pem)
            key_file.chmod(0o600)

    @staticmethod
    def _read_tape(path: Path) -> list[Delivery]:
        tape = []
        with path.open("rb") as lines:
            for line in lines:
                signature, body = line.rstrip(b"\n").split(b"\t", 1)
                tape.append(Delivery(body, signature.decode()))
        return tape

    def __enter__(self) -> Corpus:
        if self._owns_signer:
            self.signer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_signer:
            self.signer.__exit__(*exc)

    @property
    def public_pem(self) -> str:
        return self.signer.public_pem

    def _ensure(self, count: int) -> None:
        missing = count - len(self._tape)
        if missing <= 0:
            return
        started = time.perf_counter()
        fresh = self.signer.sign(self._stream.take(missing))
        self._tape.extend(fresh)
        self._log(
            f"corpus: signed {missing:,} deliveries in {time.perf_counter() - started:.1f} s "
            f"({self._stream.sessions:,} sessions, {self._stream.tracks:,} tracks so far)"
        )
        if self._dir is not None:
            with (self._dir / "tape.tsv").open("ab") as out:
                for delivery in fresh:
                    out.write(delivery.signature.encode() + b"\t" + delivery.body + b"\n")
            with (self._dir / "stream.pickle").open("wb") as f:
                pickle.dump(self._stream, f)

    def take(self, count: int) -> list[Delivery]:
        """The next `count` deliveries no earlier request of this run has used."""
        self._ensure(self._position + count)
        out = self._tape[self._position : self._position + count]
        self._position += count
        return out

    def head(self, count: int) -> list[Delivery]:
        """The first `count` deliveries, for the bare app, which keeps no state."""
        self._ensure(count)
        return self._tape[:count]

    @property
    def used(self) -> int:
        return self._position


# Request files: one request a line, `METHOD \t PATH \t SIGNATURE-or-empty \t BODY-or-empty`.
# Compact JSON never holds a raw tab or newline, so the format needs no escaping; the
# wrk script (requests.lua) and the open-loop client both read it.


def write_post_file(path: Path, deliveries: Iterable[Delivery]) -> int:
    count = 0
    with path.open("wb") as out:
        for delivery in deliveries:
            out.write(b"POST\t%s\t%s\t%s\n" % (
                INTAKE_PATH.encode(), delivery.signature.encode(), delivery.body
            ))  # fmt: skip
            count += 1
    return count


def write_get_file(path: Path, paths: Iterable[str]) -> int:
    count = 0
    with path.open("w") as out:
        for target in paths:
            out.write(f"GET\t{target}\t\t\n")
            count += 1
    return count
