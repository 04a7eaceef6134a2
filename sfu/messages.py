"""Signalling messages of protocol v1 (docs/PROTOCOL.md): what a client may send, and the errors.

`parse_client_message` turns one WebSocket frame into a checked, normalised dict
or raises `ProtocolError`; nothing here does I/O, so every rule is easy to test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .links import (
    loads_strict,
    CAP_MAX,
    CAP_MIN,
    CONTACT_MAX,
    ENDS_AT_MAX,
    EXAM_KINDS,
    ID_MAX,
    MAX_TOKEN_CHARS,
    NOTE_MAX,
    SEATS_MAX,
    TITLE_MAX,
    Role,
    is_id,
    is_text,
)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 * 1024
MAX_SDP_FRAME_BYTES = 64 * 1024
"""Only `offer` frames (they carry SDP) may be larger than MAX_FRAME_BYTES: a student's up to
this, a desk's up to `offer_frame_limit(sdp_limit("surveillant", cap))`."""

NAME_MAX = 60
TEXT_MAX = 500
REASON_MAX = 300
SDP_MAX = 60_000
"""The longest SDP a student (five m-lines) or a desk with few places may offer, in characters."""
DESK_SDP_BASE = 20_000
DESK_SDP_PER_PLACE = 5_000
"""A desk offers three m-lines per place. Measured per place, VP8 and Opus only as the desk
asks: Chromium 156 3,133 characters, Firefox 153 3,568 (3,811 between 20 and 50 places);
Firefox without codec preferences 4,454. The base holds the session part, the desk's own
voice and camera, and up to MAX_OFFER_CANDIDATES candidates."""
RESUME_MAX = 128
MESSAGE_ID_MAX = 2**31 - 1
END_WARNING_MAX = 600
"""Longest warning before an exam ends (`end_exam.after_seconds`): ten minutes."""

_SDP_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")

ERROR_TEXT: dict[str, dict[str, str]] = {
    "malformed": {
        "nl": "Het bericht kon niet worden gelezen. Laad de pagina opnieuw.",
        "en": "The message could not be read. Please reload the page.",
    },
    "unsupported_version": {
        "nl": "Deze versie van de pagina werkt niet meer met de server. Laad de pagina opnieuw.",
        "en": "This version of the page no longer works with the server. Please reload the page.",
    },
    "unknown_type": {
        "nl": "De server kent dit verzoek niet. Laad de pagina opnieuw en probeer het nog eens.",
        "en": "The server does not know this request. Reload the page and try again.",
    },
    "invalid": {
        "nl": "Er ontbreekt iets, of iets is te lang of niet toegestaan. Controleer wat je hebt ingevuld en probeer het opnieuw.",
        "en": "Something is missing, too long or not allowed. Check what you entered and try again.",
    },
    "too_large": {
        "nl": "Het bericht is te groot. Maak het korter en probeer het opnieuw.",
        "en": "The message is too large. Make it shorter and try again.",
    },
    "not_allowed": {
        "nl": "Dit is met jouw link niet toegestaan.",
        "en": "Your link does not allow this.",
    },
    "not_authenticated": {
        "nl": "Je link is nog niet gecontroleerd. Laad de pagina opnieuw via je link.",
        "en": "Your link has not been checked yet. Open the page again from your link.",
    },
    "link_invalid": {
        "nl": "Deze link is niet geldig. Controleer of je de hele link hebt gekopieerd, of vraag de organisator om een nieuwe.",
        "en": "This link is not valid. Check that you copied the whole link, or ask the organiser for a new one.",
    },
    "link_expired": {
        "nl": "Deze link is verlopen. Vraag de organisator om een nieuwe link.",
        "en": "This link has expired. Ask the organiser for a new link.",
    },
    "exam_ended": {
        "nl": "Dit tentamen is afgelopen.",
        "en": "This exam has ended.",
    },
    "session_ended": {
        "nl": "Je sessie is beëindigd door de surveillant. Met deze link kun je niet verder.",
        "en": "Your session was ended by the surveillant. You cannot continue with this link.",
    },
    "no_room": {
        "nl": "Die surveillant heeft geen plek meer vrij. Kies iemand anders.",
        "en": "That surveillant has no free place. Choose someone else.",
    },
    "unknown_participant": {
        "nl": "Deze deelnemer doet niet (meer) mee aan dit tentamen.",
        "en": "This participant is not (or no longer) in this exam.",
    },
    "rate_limited": {
        "nl": "Te veel verzoeken in korte tijd. Wacht even en probeer het dan opnieuw.",
        "en": "Too many requests in a short time. Wait a moment, then try again.",
    },
    "media_failed": {
        "nl": "De verbinding voor beeld en geluid kon niet worden gemaakt. Controleer je camera en microfoon en laad de pagina opnieuw.",
        "en": "The audio and video connection could not be set up. Check your camera and microphone, then reload the page.",
    },
    "internal": {
        "nl": "Er ging op de server iets mis met dit verzoek. Probeer het opnieuw; lukt het dan niet, laad de pagina opnieuw.",
        "en": "Something went wrong on the server with this request. Try again; if that fails, reload the page.",
    },
}
"""The human text of every error code, in Dutch and English."""


class ProtocolError(Exception):
    """A refused client message: a catalogue `code`, the client's message `id` as `ref`.

    `detail` is for logs only (a field name at most, never what the client sent).
    """

    def __init__(self, code: str, ref: int | None = None, detail: str = "") -> None:
        if code not in ERROR_TEXT:
            raise ValueError(f"unknown error code {code!r}: add it to ERROR_TEXT and PROTOCOL.md")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.ref = ref
        self.detail = detail

    def to_message(self) -> dict[str, Any]:
        """The `error` message for the client."""
        return {
            "type": "error",
            "v": PROTOCOL_VERSION,
            "code": self.code,
            "message": dict(ERROR_TEXT[self.code]),
            "re": self.ref,
        }


_BAD: Any = object()
"""Returned by a field check for a value it refuses."""

FieldCheck = Callable[[object], Any]


def _single_line(min_len: int, max_len: int) -> FieldCheck:
    def check(value: object) -> Any:
        if not isinstance(value, str):
            return _BAD
        value = value.strip()
        return value if is_text(value, min_len, max_len, multiline=False) else _BAD

    return check


def _multi_line(min_len: int, max_len: int) -> FieldCheck:
    def check(value: object) -> Any:
        if not isinstance(value, str):
            return _BAD
        value = value.strip()
        return value if is_text(value, min_len, max_len, multiline=True) else _BAD

    return check


def _integer(low: int, high: int) -> FieldCheck:
    def check(value: object) -> Any:
        return value if type(value) is int and low <= value <= high else _BAD

    return check


def _identifier(max_len: int) -> FieldCheck:
    def check(value: object) -> Any:
        return value if is_id(value, max_len) else _BAD

    return check


def _boolean(value: object) -> Any:
    return value if type(value) is bool else _BAD


def _kind(value: object) -> Any:
    return value if isinstance(value, str) and value in EXAM_KINDS else _BAD


def _token(value: object) -> Any:
    # Any string is handed to LinkSigner.verify, so a garbled link reads "link_invalid".
    return value if isinstance(value, str) and len(value) <= MAX_TOKEN_CHARS else _BAD


def sdp_limit(role: Role | None, cap: int) -> int:
    """The longest SDP `role` may offer in an exam whose cap is `cap`: a desk's grows with the cap."""
    if role != "surveillant":
        return SDP_MAX
    return max(SDP_MAX, DESK_SDP_BASE + DESK_SDP_PER_PLACE * min(max(cap, CAP_MIN), CAP_MAX))


def offer_frame_limit(sdp_max: int) -> int:
    """The largest offer frame for an SDP of at most `sdp_max` characters: MAX_SDP_FRAME_BYTES to
    SDP_MAX, in proportion (JSON writes each CRLF as four bytes: Chromium's offers grow by 5%)."""
    return max(MAX_SDP_FRAME_BYTES, sdp_max * MAX_SDP_FRAME_BYTES // SDP_MAX)


LARGEST_SDP = sdp_limit("surveillant", CAP_MAX)
LARGEST_FRAME_BYTES = offer_frame_limit(LARGEST_SDP)
"""The largest frame anyone may send (a desk's offer at CAP_MAX): the WebSocket's message limit.
The role is known only after `hello`, so each frame is held to its sender's limit when parsed."""


def _sdp(value: object) -> Any:
    # SDP lines end in CRLF, so only NUL and lone surrogates are refused here; aiortc parses the rest.
    # The sender's own limit (sdp_limit) is checked in parse_client_message.
    if not isinstance(value, str) or not 1 <= len(value) <= LARGEST_SDP:
        return _BAD
    return value if _SDP_FORBIDDEN.search(value) is None else _BAD


_participant_id = _identifier(ID_MAX)


def _participant_id_or_null(value: object) -> Any:
    return None if value is None else _participant_id(value)


class _Field:
    """One field of a message: how to check it, and whether it may be left out."""

    __slots__ = ("check", "required")

    def __init__(self, check: FieldCheck, required: bool = True) -> None:
        self.check = check
        self.required = required


_SCHEMAS: dict[str, dict[str, _Field]] = {
    "hello": {
        "token": _Field(_token),
        "name": _Field(_single_line(1, NAME_MAX), required=False),
        "resume": _Field(_identifier(RESUME_MAX), required=False),
    },
    "create_exam": {
        "title": _Field(_single_line(1, TITLE_MAX)),
        "kind": _Field(_kind),
        "cap": _Field(_integer(CAP_MIN, CAP_MAX)),
        "note": _Field(_multi_line(0, NOTE_MAX)),
        "contact": _Field(_multi_line(0, CONTACT_MAX)),
        "ends_at": _Field(_integer(0, ENDS_AT_MAX)),
        "id_check": _Field(_boolean),
        "screen_required": _Field(_boolean, required=False),
    },
    "check": {
        "token": _Field(_token),
        "resume": _Field(_identifier(RESUME_MAX), required=False),
    },
    "add_surveillant": {},
    "seat_links": {"count": _Field(_integer(1, SEATS_MAX))},
    "set_cap": {"cap": _Field(_integer(CAP_MIN, CAP_MAX))},
    "end_exam": {"after_seconds": _Field(_integer(0, END_WARNING_MAX), required=False)},
    "offer": {"sdp": _Field(_sdp)},
    "status": {
        "camera": _Field(_boolean),
        "microphone": _Field(_boolean),
        "screen": _Field(_boolean),
        "page_hidden": _Field(_boolean),
    },
    "hand": {"raised": _Field(_boolean)},
    "leave": {},
    "focus": {"student_id": _Field(_participant_id_or_null)},
    "message": {"student_id": _Field(_participant_id), "text": _Field(_multi_line(1, TEXT_MAX))},
    "talk": {"student_id": _Field(_participant_id), "on": _Field(_boolean)},
    "hand_over": {"student_id": _Field(_participant_id), "to": _Field(_participant_id)},
    "end_session": {"student_id": _Field(_participant_id), "reason": _Field(_multi_line(0, REASON_MAX))},
    "admit": {"student_id": _Field(_participant_id)},
}

_SENDERS: dict[str, frozenset[Role | None]] = {
    "hello": frozenset({None}),
    "create_exam": frozenset({"organiser"}),
    "check": frozenset({None}),
    "add_surveillant": frozenset({"organiser"}),
    "seat_links": frozenset({"organiser"}),
    "set_cap": frozenset({"organiser"}),
    "end_exam": frozenset({"organiser"}),
    "offer": frozenset({"student", "surveillant"}),
    "status": frozenset({"student"}),
    "hand": frozenset({"student"}),
    "leave": frozenset({"student"}),
    "focus": frozenset({"surveillant"}),
    "message": frozenset({"surveillant"}),
    "talk": frozenset({"surveillant"}),
    "hand_over": frozenset({"surveillant"}),
    "end_session": frozenset({"surveillant"}),
    "admit": frozenset({"surveillant"}),
}

CLIENT_MESSAGE_TYPES: frozenset[str] = frozenset(_SCHEMAS)
_ENVELOPE_FIELDS = frozenset({"type", "v", "id"})


def role_may_send(role: Role | None, message_type: str) -> bool:
    """True if a participant of `role` (None: not yet past `hello`) may send `message_type`.

    Only the role is checked here; a `create_exam` also needs the creator link, and
    anything naming a student needs that student to be assigned: the exam checks those.
    """
    senders = _SENDERS.get(message_type) if isinstance(message_type, str) else None
    return senders is not None and role in senders


def _load(raw: str | bytes, limit: int) -> tuple[object, int]:
    """The decoded JSON value and the frame's size in bytes; `malformed`, or `too_large` over `limit`."""
    if isinstance(raw, str):
        # A character is at least one byte: a long string is too large before we encode it.
        size = len(raw) if len(raw) > limit else len(raw.encode("utf-8", "surrogatepass"))
        text = raw
    elif isinstance(raw, (bytes, bytearray)):
        size = len(raw)
        if size > limit:
            raise ProtocolError("too_large")
        decoded = _decode_utf8(bytes(raw))
        if decoded is None:
            raise ProtocolError("malformed")
        text = decoded
    else:
        raise ProtocolError("malformed")
    if size > limit:
        raise ProtocolError("too_large")
    value = _decode_json(text)
    if value is _BAD:
        raise ProtocolError("malformed")
    return value, size


def _decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_json(text: str) -> object:
    try:
        return loads_strict(text)
    except (ValueError, RecursionError):
        return _BAD


def parse_client_message(raw: str | bytes, role: Role | None, sdp_max: int = SDP_MAX) -> dict[str, Any]:
    """Check one client frame against protocol v1 and return it normalised.

    `role` is the sender's role, or None before a successful `hello`; `sdp_max` the
    longest SDP this sender may offer (`sdp_limit`), which also bounds the frame. The result
    holds `type`, `id` (the client's message id, or None) and every field of that
    type (optional ones absent from the frame are None); text fields are stripped.
    Raises ProtocolError with the first rule broken, carrying the message id as
    `ref` once it is known.
    """
    message, size = _load(raw, offer_frame_limit(sdp_max))
    if not isinstance(message, dict):
        raise ProtocolError("malformed")

    ref = message.get("id")
    if ref is not None or "id" in message:
        if type(ref) is not int or not 0 <= ref <= MESSAGE_ID_MAX:
            raise ProtocolError("invalid", detail="id")

    message_type = message.get("type")
    if size > MAX_FRAME_BYTES and message_type != "offer":
        raise ProtocolError("too_large", ref)
    version = message.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version", ref)
    if not isinstance(message_type, str):
        raise ProtocolError("invalid", ref, "type")
    schema = _SCHEMAS.get(message_type)
    if schema is None:
        raise ProtocolError("unknown_type", ref)
    if role is None and message_type not in ("hello", "check"):
        raise ProtocolError("not_authenticated", ref)
    if not role_may_send(role, message_type):
        raise ProtocolError("not_allowed", ref)

    if any(key not in schema and key not in _ENVELOPE_FIELDS for key in message):
        raise ProtocolError("invalid", ref, "unknown field")
    result: dict[str, Any] = {"type": message_type, "id": ref}
    for name, field in schema.items():
        if name not in message:
            if field.required:
                raise ProtocolError("invalid", ref, f"{name} missing")
            result[name] = None
            continue
        value = field.check(message[name])
        if value is _BAD:
            raise ProtocolError("invalid", ref, name)
        result[name] = value
    if message_type == "offer" and len(result["sdp"]) > sdp_max:
        raise ProtocolError("invalid", ref, "sdp")
    return result
