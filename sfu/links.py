"""Links are capabilities: a signed, expiring token that carries role, seat and exam settings.

Nothing is stored on the server: whoever holds a valid token holds its rights,
and the same tokens verify after a restart as long as the secret stays the same.
A token is `base64url(payload JSON) + "." + base64url(HMAC-SHA256(secret, first part))`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal, get_args

Role = Literal["organiser", "surveillant", "student"]
ExamKind = Literal["written", "oral"]

ROLES: frozenset[str] = frozenset(get_args(Role))
EXAM_KINDS: frozenset[str] = frozenset(get_args(ExamKind))

TOKEN_VERSION = 1
CREATOR_SEAT = "creator"
SHARED_STUDENT_SEAT = "student"
"""The seat of an exam's one shared student link; any other student seat is a personal seat link."""
PERSONAL_SEAT_PREFIX = "seat-"
SEATS_MAX = 500
"""Most personal seat links one request asks for (a large exam hall, not a city)."""

CAP_MIN = 1
CAP_MAX = 50
TITLE_MAX = 120
NOTE_MAX = 500
CONTACT_MAX = 500
ID_MAX = 64
TIME_MAX = 2**53
"""Largest accepted unix time: the largest integer a browser's JavaScript holds exactly."""
LINK_LIFETIME_AFTER_END = 7 * 24 * 3600
"""How long after its end an exam's links still say "this exam has ended" rather than "expired"."""
ENDS_AT_MAX = TIME_MAX - LINK_LIFETIME_AFTER_END
"""Latest end an exam may have at all: its links expire LINK_LIFETIME_AFTER_END later, within TIME_MAX."""
EXAM_AHEAD_MAX = 31 * 24 * 3600
"""An exam may end at most this long after it is created (about a month, as long as a creator
link lives): links are keys, and a key that opens an exam for years is a key that leaks."""

MIN_SECRET_BYTES = 16
MAX_TOKEN_CHARS = 8192
"""Longest token `verify` reads. An exam with the longest title, note and contact
in 4-byte UTF-8 characters signs to about 6,400 characters, so every capability
`sign` accepts verifies; 2,048 would have refused exams with long Dutch notes."""

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_PATTERN = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")
_FORBIDDEN_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

_PAYLOAD_FIELDS = frozenset({"v", "role", "seat", "exp", "exam"})
_EXAM_FIELDS = frozenset({"id", "title", "kind", "cap", "note", "contact", "ends_at", "id_check", "screen_required"})
_EXAM_FIELDS_BEFORE_SCREEN = _EXAM_FIELDS - {"screen_required"}
"""Links signed before `screen_required` existed: the default for their kind applies."""


def screen_required_by_default(kind: object) -> bool:
    """A written exam needs the student's screen; an oral one does not."""
    return kind != "oral"


@dataclass(frozen=True)
class ExamSettings:
    """What an exam is, as fixed by the organiser when creating it and carried in its links."""

    exam_id: str
    title: str
    kind: ExamKind
    cap: int
    note: str
    contact: str
    ends_at: int
    id_check: bool
    """Students wait, watched, until their surveillant has checked their identity live and admits them."""
    screen_required: bool = True
    """Students must share their screen (a computer); without it, a phone or tablet can join
    with camera and microphone. Default: required for written exams, not for oral ones."""

    def to_public(self) -> dict[str, Any]:
        """The exam as shown to participants in `welcome` (and as stored in a token)."""
        return {
            "id": self.exam_id,
            "title": self.title,
            "kind": self.kind,
            "cap": self.cap,
            "note": self.note,
            "contact": self.contact,
            "ends_at": self.ends_at,
            "id_check": self.id_check,
            "screen_required": self.screen_required,
        }


@dataclass(frozen=True)
class Capability:
    """What one link lets its holder do: a role, in an exam (None for the creator), on a seat."""

    role: Role
    exam: ExamSettings | None
    seat: str
    expires_at: int


class LinkError(Exception):
    """A token was refused; `code` is `link_invalid` or `link_expired` (never the token itself)."""

    def __init__(self, code: Literal["link_invalid", "link_expired"]) -> None:
        super().__init__(code)
        self.code: str = code


def new_exam_id() -> str:
    """A fresh random exam id: 22 URL-safe characters (128 bits)."""
    return secrets.token_urlsafe(16)


def is_id(value: object, max_len: int = ID_MAX) -> bool:
    """True if `value` is a str of 1..max_len characters from A-Z, a-z, 0-9, `_` and `-`."""
    return isinstance(value, str) and 0 < len(value) <= max_len and ID_PATTERN.fullmatch(value) is not None


def is_clean_text(value: str, *, multiline: bool) -> bool:
    """True if `value` has no control characters, bidi overrides or lone surrogates.

    Multi-line text (notes, chat messages, reasons) may also hold newlines and tabs.
    """
    forbidden = _FORBIDDEN_IN_TEXT if multiline else _FORBIDDEN_IN_LINE
    return forbidden.search(value) is None


def is_text(value: object, min_len: int, max_len: int, *, multiline: bool) -> bool:
    """True if `value` is clean text of min_len..max_len characters, not blank when min_len > 0."""
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        return False
    if min_len > 0 and not value.strip():
        return False
    return is_clean_text(value, multiline=multiline)


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _exam_is_valid(exam: ExamSettings) -> bool:
    return (
        is_id(exam.exam_id)
        and is_text(exam.title, 1, TITLE_MAX, multiline=False)
        and isinstance(exam.kind, str)
        and exam.kind in EXAM_KINDS
        and _is_int(exam.cap, CAP_MIN, CAP_MAX)
        and is_text(exam.note, 0, NOTE_MAX, multiline=True)
        and is_text(exam.contact, 0, CONTACT_MAX, multiline=True)
        and _is_int(exam.ends_at, 0, TIME_MAX)
        and type(exam.id_check) is bool
        and type(exam.screen_required) is bool
    )


def _capability_is_valid(capability: Capability) -> bool:
    if not isinstance(capability.role, str) or capability.role not in ROLES or not is_id(capability.seat):
        return False
    if not _is_int(capability.expires_at, 0, TIME_MAX):
        return False
    if capability.exam is None:
        return capability.role == "organiser" and capability.seat == CREATOR_SEAT
    return (
        isinstance(capability.exam, ExamSettings)
        and capability.seat != CREATOR_SEAT
        and _exam_is_valid(capability.exam)
    )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict base64url without padding: only the canonical spelling of some bytes decodes."""
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _b64encode(data) == text else None


def _reject_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def loads_strict(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys. Raises ValueError or RecursionError."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)


def _load_json(data: bytes) -> object | None:
    """Strict JSON (UTF-8, no NaN/Infinity, no duplicate keys), or None; never keeps the input."""
    try:
        return loads_strict(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _exam_from_payload(value: object) -> ExamSettings | None:
    if not isinstance(value, dict) or value.keys() not in (_EXAM_FIELDS, _EXAM_FIELDS_BEFORE_SCREEN):
        return None
    exam = ExamSettings(
        exam_id=value["id"],
        title=value["title"],
        kind=value["kind"],
        cap=value["cap"],
        note=value["note"],
        contact=value["contact"],
        ends_at=value["ends_at"],
        id_check=value["id_check"],
        screen_required=value.get("screen_required", screen_required_by_default(value["kind"])),
    )
    return exam if _exam_is_valid(exam) else None


def _capability_from_payload(value: object) -> Capability | None:
    if not isinstance(value, dict) or value.keys() != _PAYLOAD_FIELDS:
        return None
    if type(value["v"]) is not int or value["v"] != TOKEN_VERSION:
        return None
    exam: ExamSettings | None = None
    if value["exam"] is not None:
        exam = _exam_from_payload(value["exam"])
        if exam is None:
            return None
    capability = Capability(role=value["role"], exam=exam, seat=value["seat"], expires_at=value["exp"])
    return capability if _capability_is_valid(capability) else None


class LinkSigner:
    """Signs capabilities into tokens and verifies tokens back into capabilities."""

    def __init__(self, secret: bytes) -> None:
        """Use `secret` (at least 16 bytes; keep it across restarts so links keep working)."""
        if not isinstance(secret, (bytes, bytearray)):
            raise TypeError("secret must be bytes")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)

    def __repr__(self) -> str:
        return "LinkSigner(<secret>)"

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest()

    def sign(self, capability: Capability) -> str:
        """The token for `capability`: base64url characters and one `.`, safe in a URL fragment.

        Raises ValueError if the capability breaks a rule that `verify` enforces
        (a creator with an exam, a student without one, a cap of 0, a title too long...).
        """
        if not isinstance(capability, Capability) or not _capability_is_valid(capability):
            raise ValueError("capability breaks the link rules; it would never verify")
        payload = {
            "v": TOKEN_VERSION,
            "role": capability.role,
            "seat": capability.seat,
            "exp": capability.expires_at,
            "exam": None if capability.exam is None else capability.exam.to_public(),
        }
        body = _b64encode(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        token = body + "." + _b64encode(self._mac(body))
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("capability too large for a link")
        return token

    def verify(self, token: object, now: float) -> Capability:
        """The capability in `token`, checked against the secret and the clock (unix seconds).

        Raises LinkError("link_invalid") for anything not signed by this secret or not
        well-formed, and LinkError("link_expired") once `now >= expires_at`.
        """
        capability = self._read(token)
        if capability is None:
            raise LinkError("link_invalid")
        if now >= capability.expires_at:
            raise LinkError("link_expired")
        return capability

    def _read(self, token: object) -> Capability | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return None
        match = _TOKEN_PATTERN.fullmatch(token)
        if match is None:
            return None
        body, signature_text = match.groups()
        signature = _b64decode(signature_text)
        if signature is None or not hmac.compare_digest(self._mac(body), signature):
            return None
        payload = _b64decode(body)
        if payload is None:
            return None
        return _capability_from_payload(_load_json(payload))
