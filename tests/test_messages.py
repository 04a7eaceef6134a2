"""Client message schemas of protocol v1 and the error catalogue: every rule, then a fuzz."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.messages import (
    CLIENT_MESSAGE_TYPES,
    ERROR_TEXT,
    MAX_FRAME_BYTES,
    MAX_SDP_FRAME_BYTES,
    ProtocolError,
    parse_client_message,
    role_may_send,
)

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
ROLES = ("organiser", "surveillant", "student")

SENDERS: dict[str, set[str | None]] = {
    "hello": {None},
    "check": {None},
    "seat_links": {"organiser"},
    "create_exam": {"organiser"},
    "add_surveillant": {"organiser"},
    "set_cap": {"organiser"},
    "end_exam": {"organiser"},
    "offer": {"student", "surveillant"},
    "status": {"student"},
    "hand": {"student"},
    "leave": {"student"},
    "focus": {"surveillant"},
    "message": {"surveillant"},
    "talk": {"surveillant"},
    "hand_over": {"surveillant"},
    "end_session": {"surveillant"},
    "admit": {"surveillant"},
}

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"

VALID: dict[str, dict[str, Any]] = {
    "hello": {"token": "abc.def", "name": "Zoë de Vries", "resume": "r3sume_Token-1"},
    "create_exam": {
        "title": "Wiskunde B",
        "kind": "written",
        "cap": 8,
        "note": "Rekenmachine toegestaan.\nSucces!",
        "contact": "toetsbureau@example.nl",
        "ends_at": 1_700_003_600,
        "id_check": True,
        "screen_required": True,
    },
    "check": {"token": "abc.def", "resume": "r3sume_Token-1"},
    "seat_links": {"count": 30},
    "add_surveillant": {},
    "set_cap": {"cap": 4},
    "end_exam": {"after_seconds": 60},
    "offer": {"sdp": SDP},
    "status": {"camera": True, "microphone": True, "screen": False, "page_hidden": False},
    "hand": {"raised": True},
    "leave": {},
    "focus": {"student_id": "p-0a1b2c3d4e5f"},
    "message": {"student_id": "p-0a1b2c3d4e5f", "text": "Je camera staat uit."},
    "talk": {"student_id": "p-0a1b2c3d4e5f", "on": True},
    "hand_over": {"student_id": "p-0a1b2c3d4e5f", "to": "p-ffeeddccbbaa"},
    "end_session": {"student_id": "p-0a1b2c3d4e5f", "reason": "Fraude vermoed."},
    "admit": {"student_id": "p-0a1b2c3d4e5f"},
}


def sender_of(message_type: str) -> str | None:
    return sorted(SENDERS[message_type], key=str)[0]


def frame(message_type: str, **fields: Any) -> str:
    return json.dumps({"type": message_type, "v": 1, **VALID[message_type], **fields}, ensure_ascii=False)


def error_of(raw: Any, role: Any = "student") -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(raw, role)
    return caught.value


def code_of(raw: Any, role: Any = "student") -> str:
    return error_of(raw, role).code


def field_code(message_type: str, **fields: Any) -> str:
    """The error code for a message of this type from its sender, with some fields changed."""
    message = {"type": message_type, "v": 1, **VALID[message_type], **fields}
    message = {key: value for key, value in message.items() if value is not DROP}
    return code_of(json.dumps(message), sender_of(message_type))


def parsed(message_type: str, **fields: Any) -> dict[str, Any]:
    return parse_client_message(frame(message_type, **fields), sender_of(message_type))


DROP = object()


# -- valid messages ------------------------------------------------------------


@pytest.mark.parametrize("message_type", sorted(VALID))
def test_valid_message_of_every_type(message_type: str) -> None:
    for role in SENDERS[message_type]:
        result = parse_client_message(frame(message_type), role)  # type: ignore[arg-type]
        assert result == {"type": message_type, "id": None, **VALID[message_type]}


def test_known_types_are_the_protocol_types() -> None:
    assert CLIENT_MESSAGE_TYPES == set(SENDERS)


def test_bytes_frame_is_accepted() -> None:
    assert parse_client_message(frame("hand").encode(), "student")["raised"] is True


def test_id_is_returned() -> None:
    assert parsed("leave", id=0)["id"] == 0
    assert parsed("leave", id=2**31 - 1)["id"] == 2**31 - 1


def test_create_exam_may_leave_screen_required_out_but_not_send_a_non_boolean() -> None:
    fields = dict(VALID["create_exam"])
    del fields["screen_required"]
    parsed = parse_client_message(json.dumps({"type": "create_exam", "v": 1, **fields}), "organiser")
    assert parsed.get("screen_required") is None  # the kind's default applies (sfu/registry.py)
    assert field_code("create_exam", screen_required="yes") == "invalid"


def test_hello_optional_fields_default_to_none() -> None:
    result = parse_client_message('{"type":"hello","v":1,"token":"t"}', None)
    assert result == {"type": "hello", "id": None, "token": "t", "name": None, "resume": None}


def test_texts_are_stripped() -> None:
    assert parsed("hello", name="  Zoë  ")["name"] == "Zoë"
    assert parsed("message", text="\n  hallo \t")["text"] == "hallo"
    assert parsed("create_exam", title=" Wiskunde ", note="  ", contact=" a ")["title"] == "Wiskunde"
    assert parsed("create_exam", note="  ")["note"] == ""
    assert parsed("end_session", reason="  ")["reason"] == ""


def test_focus_may_be_null() -> None:
    assert parsed("focus", student_id=None)["student_id"] is None


def test_sdp_keeps_its_line_endings() -> None:
    assert parsed("offer")["sdp"] == SDP


# -- roles ---------------------------------------------------------------------


@pytest.mark.parametrize("message_type", sorted(SENDERS))
@pytest.mark.parametrize("role", [None, *ROLES])
def test_role_may_send_matches_protocol(role: str | None, message_type: str) -> None:
    assert role_may_send(role, message_type) is (role in SENDERS[message_type])  # type: ignore[arg-type]


def test_role_may_send_unknown_type() -> None:
    assert not role_may_send("organiser", "welcome")
    assert not role_may_send(None, "bogus")


@pytest.mark.parametrize("message_type", sorted(set(SENDERS) - {"hello", "check"}))
def test_not_authenticated_before_hello(message_type: str) -> None:
    error = error_of(frame(message_type, id=7), None)
    assert (error.code, error.ref) == ("not_authenticated", 7)


@pytest.mark.parametrize(
    ("message_type", "role"),
    [(t, r) for t in sorted(SENDERS) for r in ROLES if r not in SENDERS[t]],
)
def test_not_allowed_for_role(message_type: str, role: str) -> None:
    error = error_of(frame(message_type, id=3), role)
    assert (error.code, error.ref) == ("not_allowed", 3)


# -- envelope ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "{", "[1, 2]", '"hello"', "1", "null", "true", '{"type":"hand","v":1,"raised":NaN}',
     '{"type":"hand","v":1,"raised":Infinity}', '{"type":"hand","type":"leave","v":1}', "[" * 5000 + "]" * 5000,
     '{"a":' * 5000 + "1" + "}" * 5000, '{"type":"set_cap","v":1,"cap":' + "9" * 5000 + "}",
     b"\xff\xfe{}", b'{"type":"leave","v":1,"x":"\xc3"}', 17, None, ["x"], {"type": "leave"}],
)
def test_malformed(raw: Any) -> None:
    assert code_of(raw) == "malformed"


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None, [1]])
def test_unsupported_version(version: object) -> None:
    message = {"type": "leave", "v": version, "id": 9}
    error = error_of(json.dumps(message))
    assert (error.code, error.ref) == ("unsupported_version", 9)


def test_missing_version() -> None:
    assert code_of('{"type":"leave"}') == "unsupported_version"


@pytest.mark.parametrize("message_type", ["bogus", "welcome", "error", "HELLO", "", "hello "])
def test_unknown_type(message_type: str) -> None:
    error = error_of(json.dumps({"type": message_type, "v": 1, "id": 4}))
    assert (error.code, error.ref) == ("unknown_type", 4)


@pytest.mark.parametrize("message_type", [None, 5, ["leave"], {"leave": 1}, True])
def test_type_not_a_string_is_invalid(message_type: object) -> None:
    assert code_of(json.dumps({"type": message_type, "v": 1})) == "invalid"
    assert code_of(json.dumps({"v": 1})) == "invalid"


@pytest.mark.parametrize("message_id", [-1, 2**31, True, False, "1", 1.0, None, [], {}])
def test_bad_id_is_invalid_without_ref(message_id: object) -> None:
    error = error_of(json.dumps({"type": "leave", "v": 1, "id": message_id}))
    assert (error.code, error.ref) == ("invalid", None)


def test_ref_is_carried_by_field_errors() -> None:
    error = error_of(frame("hand", raised=1, id=12))
    assert (error.code, error.ref) == ("invalid", 12)


# -- sizes ---------------------------------------------------------------------


def _padded(message_type: str, size: int, **fields: Any) -> str:
    """A frame of exactly `size` bytes, padded with JSON whitespace."""
    text = frame(message_type, **fields)
    return text[:-1] + " " * (size - len(text.encode())) + "}"


def test_frame_at_the_limit_is_accepted() -> None:
    assert parse_client_message(_padded("hand", MAX_FRAME_BYTES), "student")["type"] == "hand"


def test_frame_over_the_limit_is_too_large() -> None:
    error = error_of(_padded("hand", MAX_FRAME_BYTES + 1, id=5))
    assert (error.code, error.ref) == ("too_large", 5)
    assert code_of(_padded("hand", MAX_FRAME_BYTES + 1).encode()) == "too_large"


def test_size_counts_utf8_bytes_not_characters() -> None:
    text = "é" * 300
    message = frame("message", text=text)
    padding = MAX_FRAME_BYTES - len(message.encode()) + 1
    raw = message[:-1] + " " * padding + "}"
    assert len(raw) <= MAX_FRAME_BYTES < len(raw.encode())
    assert code_of(raw, "surveillant") == "too_large"


def test_offer_may_use_the_sdp_limit() -> None:
    assert parse_client_message(_padded("offer", MAX_SDP_FRAME_BYTES), "student")["type"] == "offer"
    big_sdp = ("a=" + "x" * 98 + "\r\n") * 500
    assert parse_client_message(frame("offer", sdp=big_sdp), "surveillant")["sdp"] == big_sdp


def test_offer_over_the_sdp_limit_is_too_large() -> None:
    assert code_of(_padded("offer", MAX_SDP_FRAME_BYTES + 1)) == "too_large"
    assert code_of(_padded("offer", MAX_SDP_FRAME_BYTES + 1).encode()) == "too_large"
    assert code_of("x" * (10 * MAX_SDP_FRAME_BYTES)) == "too_large"
    assert code_of(b"x" * (10 * MAX_SDP_FRAME_BYTES)) == "too_large"


def test_too_large_wins_over_role_and_fields() -> None:
    assert code_of(_padded("hello", MAX_FRAME_BYTES + 1), "student") == "too_large"
    assert code_of(_padded("status", MAX_FRAME_BYTES + 1, camera="yes"), "student") == "too_large"


# -- fields --------------------------------------------------------------------


@pytest.mark.parametrize(("message_type", "field"), [(t, f) for t in sorted(VALID) for f in VALID[t]
                                                     if (t, f) not in {("hello", "name"), ("hello", "resume"),
                                                                       ("create_exam", "screen_required"),
                                                                       ("check", "resume"), ("end_exam", "after_seconds")}])
def test_every_required_field_is_required(message_type: str, field: str) -> None:
    assert field_code(message_type, **{field: DROP}) == "invalid"


@pytest.mark.parametrize("message_type", sorted(VALID))
def test_unknown_field_is_invalid(message_type: str) -> None:
    assert field_code(message_type, extra=1) == "invalid"
    assert field_code(message_type, **{"\ud800": 1}) == "invalid"


INVALID_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"token": None}),
    ("hello", {"token": 5}),
    ("hello", {"token": "x" * 10_000}),
    ("hello", {"name": ""}),
    ("hello", {"name": "   "}),
    ("hello", {"name": "x" * 61}),
    ("hello", {"name": "Zoë\nde Vries"}),
    ("hello", {"name": "tab\there"}),
    ("hello", {"name": "bell\x07"}),
    ("hello", {"name": "\u202eevil"}),
    ("hello", {"name": "\ud800"}),
    ("hello", {"name": None}),
    ("hello", {"name": 5}),
    ("hello", {"resume": ""}),
    ("hello", {"resume": "has space"}),
    ("hello", {"resume": "x" * 129}),
    ("hello", {"resume": None}),
    ("create_exam", {"title": ""}),
    ("create_exam", {"title": "x" * 121}),
    ("create_exam", {"title": "two\nlines"}),
    ("create_exam", {"kind": "essay"}),
    ("create_exam", {"kind": None}),
    ("create_exam", {"cap": 0}),
    ("create_exam", {"cap": 51}),
    ("create_exam", {"cap": True}),
    ("create_exam", {"cap": 8.0}),
    ("create_exam", {"cap": "8"}),
    ("create_exam", {"note": "x" * 501}),
    ("create_exam", {"note": None}),
    ("create_exam", {"note": "nul\x00"}),
    ("create_exam", {"contact": "x" * 501}),
    ("create_exam", {"ends_at": 1.7e9}),
    ("create_exam", {"ends_at": "1700000000"}),
    ("create_exam", {"ends_at": -1}),
    ("create_exam", {"ends_at": True}),
    ("create_exam", {"ends_at": 2**53 + 1}),
    ("create_exam", {"id_check": 1}),
    ("create_exam", {"id_check": 0}),
    ("create_exam", {"id_check": "true"}),
    ("create_exam", {"id_check": None}),
    ("create_exam", {"id_check": [True]}),
    ("set_cap", {"cap": 0}),
    ("set_cap", {"cap": 51}),
    ("set_cap", {"cap": False}),
    ("set_cap", {"cap": None}),
    ("offer", {"sdp": ""}),
    ("offer", {"sdp": "x" * 60_001}),
    ("offer", {"sdp": None}),
    ("offer", {"sdp": {"sdp": SDP}}),
    ("offer", {"sdp": "v=0\x00"}),
    ("status", {"camera": 1}),
    ("status", {"microphone": "true"}),
    ("status", {"screen": None}),
    ("status", {"page_hidden": 0}),
    ("hand", {"raised": 1}),
    ("hand", {"raised": None}),
    ("focus", {"student_id": ""}),
    ("focus", {"student_id": 5}),
    ("focus", {"student_id": "x" * 65}),
    ("focus", {"student_id": "p-1/../2"}),
    ("message", {"text": ""}),
    ("message", {"text": "   "}),
    ("message", {"text": "x" * 501}),
    ("message", {"text": 5}),
    ("message", {"student_id": None}),
    ("talk", {"on": 1}),
    ("talk", {"on": "on"}),
    ("hand_over", {"to": ""}),
    ("hand_over", {"to": None}),
    ("hand_over", {"to": "p 1"}),
    ("end_session", {"reason": "x" * 301}),
    ("end_session", {"reason": None}),
    ("admit", {"student_id": None}),
    ("admit", {"student_id": ""}),
    ("admit", {"student_id": 5}),
    ("admit", {"student_id": "x" * 65}),
    ("admit", {"student_id": ["p-0a1b2c3d4e5f"]}),
]


@pytest.mark.parametrize(("message_type", "fields"), INVALID_FIELDS)
def test_invalid_field(message_type: str, fields: dict[str, Any]) -> None:
    assert field_code(message_type, **fields) == "invalid"


VALID_EDGES: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"name": "x"}),
    ("hello", {"name": "x" * 60}),
    ("hello", {"name": "  " + "x" * 60 + "  "}),
    ("hello", {"token": ""}),
    ("hello", {"resume": "x" * 128}),
    ("create_exam", {"title": "x" * 120}),
    ("create_exam", {"kind": "oral"}),
    ("create_exam", {"cap": 1}),
    ("create_exam", {"cap": 50}),
    ("create_exam", {"note": ""}),
    ("create_exam", {"note": "x" * 500}),
    ("create_exam", {"contact": "x" * 500}),
    ("create_exam", {"ends_at": 0}),
    ("create_exam", {"id_check": False}),
    ("set_cap", {"cap": 50}),
    ("offer", {"sdp": "x" * 60_000}),
    ("focus", {"student_id": "x" * 64}),
    ("message", {"text": "x" * 500}),
    ("message", {"text": "regel 1\nregel 2\tmet tab"}),
    ("end_session", {"reason": ""}),
    ("end_session", {"reason": "x" * 300}),
    ("admit", {"student_id": "x" * 64}),
]


@pytest.mark.parametrize(("message_type", "fields"), VALID_EDGES)
def test_valid_edge(message_type: str, fields: dict[str, Any]) -> None:
    result = parsed(message_type, **fields)
    for name, value in fields.items():
        assert result[name] == (value.strip() if isinstance(value, str) and name != "sdp" else value)


# -- errors and their text -----------------------------------------------------


def protocol_codes() -> set[str]:
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text.split("## Errors", 1)[1].split("\n## ", 1)[0]
    listed = section.split("Codes:", 1)[1].split("Close codes", 1)[0]
    return set(re.findall(r"(?:^|,)\s*`([a-z_]+)`", listed))


def test_catalogue_covers_exactly_the_protocol_codes() -> None:
    codes = protocol_codes()
    assert len(codes) >= 14
    assert set(ERROR_TEXT) == codes


@pytest.mark.parametrize("code", sorted(ERROR_TEXT))
def test_every_code_has_dutch_and_english(code: str) -> None:
    text = ERROR_TEXT[code]
    assert set(text) == {"nl", "en"}
    assert text["nl"].strip() and text["en"].strip()
    assert text["nl"] != text["en"]
    assert text["nl"][0].isupper() and text["en"][0].isupper()
    assert text["nl"].endswith(".") and text["en"].endswith(".")


def test_to_message() -> None:
    message = ProtocolError("no_room", ref=3).to_message()
    assert message == {"type": "error", "v": 1, "code": "no_room", "message": ERROR_TEXT["no_room"], "re": 3}
    assert message["message"] is not ERROR_TEXT["no_room"]
    assert ProtocolError("invalid").to_message()["re"] is None
    json.dumps(message)


def test_unknown_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        ProtocolError("oops")


def test_error_detail_never_echoes_client_data() -> None:
    secret_name = "Geheime Naam" + "\x07"
    error = error_of(frame("hello", name=secret_name), None)
    assert error.code == "invalid" and "Geheime" not in str(error)
    error = error_of(json.dumps({"type": "leave", "v": 1, "Geheime Naam": 1}))
    assert "Geheime" not in str(error)


# -- fuzz ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
roles = st.sampled_from([None, *ROLES])


def only_protocol_errors(raw: Any, role: Any) -> None:
    try:
        result = parse_client_message(raw, role)
    except ProtocolError as error:
        assert error.code in ERROR_TEXT
        json.dumps(error.to_message())
        return
    assert result["type"] in CLIENT_MESSAGE_TYPES
    assert role_may_send(role, result["type"])


@settings(max_examples=400)
@given(json_values, roles)
def test_fuzz_any_json_value(value: Any, role: Any) -> None:
    only_protocol_errors(json.dumps(value), role)


@settings(max_examples=400)
@given(st.binary(max_size=2000), roles)
def test_fuzz_any_bytes(raw: bytes, role: Any) -> None:
    only_protocol_errors(raw, role)


@settings(max_examples=300)
@given(st.text(max_size=2000), roles)
def test_fuzz_any_text(raw: str, role: Any) -> None:
    only_protocol_errors(raw, role)


@settings(max_examples=600)
@given(
    st.sampled_from(sorted(VALID)).flatmap(
        lambda message_type: st.fixed_dictionaries(
            {"type": st.just(message_type), "v": st.just(1) | json_values},
            optional={
                "id": st.integers(-5, 2**32) | json_values,
                **{name: st.just(value) | json_values for name, value in VALID[message_type].items()},
            },
        )
    ),
    roles,
)
def test_fuzz_messages_close_to_valid(message: dict[str, Any], role: Any) -> None:
    only_protocol_errors(json.dumps(message), role)


# -- numbers: every accepted number fits what is done with it --------------------

NUMBERS = (
    st.integers()
    | st.integers(min_value=2**53 - 8 * 24 * 3600, max_value=2**53 + 8)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(alphabet="0123456789.-e", max_size=20)
)
NUMERIC_FIELDS = [("create_exam", "cap"), ("create_exam", "ends_at"), ("set_cap", "cap")]


def _with(message_type: str, field: str, value: Any) -> str:
    # allow_nan: NaN and Infinity go out as the bare words they are in JavaScript, which JSON refuses.
    return json.dumps({"type": message_type, "v": 1, **VALID[message_type], field: value}, allow_nan=True)


def _signs_into_a_link(message: dict[str, Any]) -> None:
    """What signalling does with an accepted create_exam: every link of the exam signs and verifies."""
    from sfu.links import LINK_LIFETIME_AFTER_END, Capability, ExamSettings, LinkSigner

    exam = ExamSettings(
        exam_id="exam_1", title=message["title"], kind=message["kind"], cap=message["cap"],
        note=message["note"], contact=message["contact"], ends_at=message["ends_at"], id_check=message["id_check"],
    )
    signer = LinkSigner(b"0123456789abcdef-test-secret")
    capability = Capability(role="student", exam=exam, seat="student", expires_at=exam.ends_at + LINK_LIFETIME_AFTER_END)
    assert signer.verify(signer.sign(capability), exam.ends_at) == capability


@pytest.mark.parametrize(("message_type", "field"), NUMERIC_FIELDS)
@settings(max_examples=300)
@given(value=NUMBERS)
def test_every_number_is_an_int_in_range_or_invalid(message_type: str, field: str, value: Any) -> None:
    """Bools, fractions, NaN, Infinity and digit strings are refused; an accepted number is an
    int in its range, and an accepted create_exam makes links that sign (2**53 used to crash `sign`)."""
    raw = _with(message_type, field, value)
    try:
        result = parse_client_message(raw, sender_of(message_type))
    except ProtocolError as error:
        assert error.code in ("invalid", "malformed"), error
        if error.code == "malformed":
            assert isinstance(value, float) and (value != value or value in (float("inf"), float("-inf")))
        return
    assert type(result[field]) is int and result[field] == value
    if field == "cap":
        assert 1 <= result[field] <= 50
    else:
        assert 0 <= result[field] <= 2**53
    if message_type == "create_exam":
        _signs_into_a_link(result)


@pytest.mark.parametrize("value", [2**53, 2**53 - 1, 2**53 - 7 * 24 * 3600 + 1, 2**63, 10**400])
def test_an_end_too_late_for_any_link_is_invalid(value: int) -> None:
    """An exam's links expire a week after it ends: an end whose links would pass 2**53 is refused."""
    raw = f'{{"type":"create_exam","v":1,"title":"T","kind":"written","cap":8,"note":"","contact":"",' \
          f'"ends_at":{value},"id_check":false}}'
    assert code_of(raw, "organiser") in ("invalid", "malformed")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "8.0", "8e0", "true"])
def test_non_integers_never_pass_as_a_cap(number: str) -> None:
    raw = '{"type":"set_cap","v":1,"cap":' + number + "}"
    assert code_of(raw, "organiser") in ("invalid", "malformed")


def test_the_latest_end_still_signs() -> None:
    from sfu.links import ENDS_AT_MAX

    result = parsed("create_exam", ends_at=ENDS_AT_MAX)
    assert result["ends_at"] == ENDS_AT_MAX
    _signs_into_a_link(result)


def test_an_exam_ends_in_the_future_and_within_a_month(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock part of the bound: `create` refuses an end in the past or more than EXAM_AHEAD_MAX ahead."""
    from sfu.config import ServerConfig
    from sfu.links import EXAM_AHEAD_MAX
    from sfu.registry import ExamRegistry

    now = 1_800_000_000.5
    monkeypatch.setattr("sfu.registry.time.time", lambda: now)
    registry = ExamRegistry(ServerConfig(secret=b"0123456789abcdef-test-secret"))

    def create(ends_at: int) -> Any:
        return registry.create("T", "written", 8, "", "", ends_at, False)

    assert EXAM_AHEAD_MAX == 31 * 24 * 3600
    for ends_at in (int(now) + 1, int(now) + 3600, int(now + EXAM_AHEAD_MAX)):
        assert create(ends_at).ends_at == ends_at
        assert registry.exam_link(create(ends_at), "student", "student")
    for ends_at in (0, int(now) - 1, int(now), int(now + EXAM_AHEAD_MAX) + 1, 2**53 - 7 * 24 * 3600):
        with pytest.raises(ProtocolError) as refused:
            create(ends_at)
        assert refused.value.code == "invalid"
