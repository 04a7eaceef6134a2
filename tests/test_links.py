"""Signed capability links: round trips, every way a token is refused, and a fuzz of garbage."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.links import (
    MAX_TOKEN_CHARS,
    Capability,
    ExamSettings,
    LinkError,
    LinkSigner,
    is_clean_text,
    new_exam_id,
)

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_700_000_000
EXAM = ExamSettings(
    exam_id="exam_ABC-123",
    title="Wiskunde B — mondeling",
    kind="oral",
    cap=8,
    note="Houd je studentenkaart bij de hand.\nSucces!",
    contact="toetsbureau@example.nl",
    ends_at=NOW + 3600,
    id_check=True,
)


def student(exam: ExamSettings = EXAM, expires_at: int = NOW + 7200) -> Capability:
    return Capability(role="student", exam=exam, seat="student", expires_at=expires_at)


def creator(expires_at: int = NOW + 7200) -> Capability:
    return Capability(role="organiser", exam=None, seat="creator", expires_at=expires_at)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(payload: object, secret: bytes = SECRET) -> str:
    """A token with a correct signature over any payload: tests the strict parsing behind the MAC."""
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return body + "." + b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def payload_of(capability: Capability) -> dict:
    token = LinkSigner(SECRET).sign(capability)
    body = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def refused(token: object, now: float = NOW) -> str:
    with pytest.raises(LinkError) as caught:
        LinkSigner(SECRET).verify(token, now)
    return caught.value.code


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "capability",
    [
        student(),
        Capability(role="surveillant", exam=EXAM, seat="s1", expires_at=NOW + 60),
        Capability(role="surveillant", exam=EXAM, seat="s-0a1b2c3d", expires_at=NOW + 60),
        Capability(role="organiser", exam=EXAM, seat="organiser", expires_at=NOW + 60),
        creator(),
    ],
    ids=["student", "surveillant", "surveillant-hex-seat", "organiser", "creator"],
)
def test_round_trip(capability: Capability) -> None:
    signer = LinkSigner(SECRET)
    assert signer.verify(signer.sign(capability), NOW) == capability


def test_token_is_fragment_safe_and_compact_json_with_version() -> None:
    token = LinkSigner(SECRET).sign(student())
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert token.count(".") == 1
    payload = payload_of(student())
    assert payload["v"] == 1
    assert payload["exam"] == EXAM.to_public()


def test_same_secret_verifies_after_restart() -> None:
    token = LinkSigner(SECRET).sign(student())
    assert LinkSigner(bytes(SECRET)).verify(token, NOW) == student()


def test_to_public_has_the_welcome_fields() -> None:
    assert EXAM.to_public() == {
        "id": "exam_ABC-123",
        "title": "Wiskunde B — mondeling",
        "kind": "oral",
        "cap": 8,
        "note": "Houd je studentenkaart bij de hand.\nSucces!",
        "contact": "toetsbureau@example.nl",
        "ends_at": NOW + 3600,
        "id_check": True,
        "screen_required": True,
    }


@pytest.mark.parametrize("screen_required", [True, False])
def test_screen_required_is_signed_and_round_trips(screen_required: bool) -> None:
    capability = student(dataclasses.replace(EXAM, screen_required=screen_required))
    signer = LinkSigner(SECRET)
    verified = signer.verify(signer.sign(capability), NOW)
    assert verified.exam is not None and verified.exam.screen_required is screen_required


@pytest.mark.parametrize(("kind", "required"), [("written", True), ("oral", False)])
def test_a_link_signed_before_screen_required_gets_its_kinds_default(
    monkeypatch: pytest.MonkeyPatch, kind: str, required: bool
) -> None:
    public = ExamSettings.to_public

    def before(self: ExamSettings) -> dict:
        fields = public(self)
        del fields["screen_required"]
        return fields

    signer = LinkSigner(SECRET)
    monkeypatch.setattr(ExamSettings, "to_public", before)
    token = signer.sign(student(dataclasses.replace(EXAM, kind=kind, cap=1, screen_required=not required)))
    monkeypatch.undo()
    verified = signer.verify(token, NOW)
    assert verified.exam is not None and verified.exam.screen_required is required


@pytest.mark.parametrize("id_check", [True, False])
def test_id_check_is_signed_and_round_trips(id_check: bool) -> None:
    capability = student(dataclasses.replace(EXAM, id_check=id_check))
    signer = LinkSigner(SECRET)
    assert payload_of(capability)["exam"]["id_check"] is id_check
    verified = signer.verify(signer.sign(capability), NOW)
    assert verified.exam is not None and verified.exam.id_check is id_check


def test_id_check_cannot_be_switched_off_in_a_signed_link() -> None:
    token = LinkSigner(SECRET).sign(student())
    body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    switched = raw.replace(b'"id_check":true', b'"id_check":false')
    assert switched != raw
    assert refused(b64(switched) + "." + signature) == "link_invalid"


def test_a_link_without_id_check_is_invalid() -> None:
    # Links signed before the field existed: none were handed out, so none need to keep working.
    payload = payload_of(student())
    del payload["exam"]["id_check"]
    assert refused(forge(payload)) == "link_invalid"


def test_largest_exam_fits_in_a_token() -> None:
    emoji = "\U0001f600"
    exam = ExamSettings(
        exam_id="x" * 64,
        title=emoji * 120,
        kind="written",
        cap=50,
        note=emoji * 500,
        contact=emoji * 500,
        ends_at=2**53,
        id_check=False,
    )
    capability = Capability(role="surveillant", exam=exam, seat="s" * 64, expires_at=2**53)
    signer = LinkSigner(SECRET)
    token = signer.sign(capability)
    assert len(token) <= MAX_TOKEN_CHARS
    assert signer.verify(token, NOW) == capability


# -- expiry --------------------------------------------------------------------


def test_expired_at_the_exact_second() -> None:
    token = LinkSigner(SECRET).sign(student(expires_at=NOW))
    assert refused(token, NOW) == "link_expired"
    assert refused(token, NOW + 0.5) == "link_expired"
    assert LinkSigner(SECRET).verify(token, NOW - 0.001) == student(expires_at=NOW)


def test_expired_creator_link() -> None:
    assert refused(LinkSigner(SECRET).sign(creator(expires_at=NOW - 1))) == "link_expired"


def test_tampered_expired_link_is_invalid_not_expired() -> None:
    token = LinkSigner(SECRET).sign(student(expires_at=NOW - 1))
    assert refused(token[:-1] + ("A" if token[-1] != "A" else "B")) == "link_invalid"


# -- tampering -----------------------------------------------------------------


def test_every_flipped_payload_byte_is_refused() -> None:
    token = LinkSigner(SECRET).sign(student())
    body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for index in range(len(raw)):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        assert refused(b64(bytes(changed)) + "." + signature) == "link_invalid"


def test_role_swapped_in_payload_is_refused() -> None:
    token = LinkSigner(SECRET).sign(student())
    body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    promoted = raw.replace(b'"role":"student"', b'"role":"organiser"')
    assert promoted != raw
    assert refused(b64(promoted) + "." + signature) == "link_invalid"


def test_every_changed_signature_character_is_refused() -> None:
    token = LinkSigner(SECRET).sign(student())
    body, signature = token.split(".")
    for index in range(len(signature)):
        other = "A" if signature[index] != "A" else "B"
        assert refused(body + "." + signature[:index] + other + signature[index + 1 :]) == "link_invalid"


def test_wrong_secret() -> None:
    token = LinkSigner(b"another-secret-of-enough-bytes").sign(student())
    assert refused(token) == "link_invalid"


def test_payload_from_another_token_with_this_signature() -> None:
    signer = LinkSigner(SECRET)
    body_a, _ = signer.sign(student()).split(".")
    _, signature_b = signer.sign(creator()).split(".")
    assert refused(body_a + "." + signature_b) == "link_invalid"


@pytest.mark.parametrize("cut", [1, 5, 20, 43, 44, 60])
def test_truncated(cut: int) -> None:
    token = LinkSigner(SECRET).sign(student())
    assert refused(token[:-cut]) == "link_invalid"


def test_non_canonical_base64_signature_is_refused() -> None:
    token = LinkSigner(SECRET).sign(student())
    body, signature = token.split(".")
    # The last of 43 characters carries 2 unused bits; setting one gives the same bytes, spelled differently.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    respelled = signature[:-1] + alphabet[last | 1 if last % 4 == 0 else last - (last % 4)]
    assert respelled != signature
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(signature + "=")
    assert refused(body + "." + respelled) == "link_invalid"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "a.b",
        "a.b.c",
        "Zm9v." + "A" * 42,
        "Zm9v." + "A" * 44,
        " " + "Zm9v." + "A" * 43,
        "Zm9v=." + "A" * 43,
        "Zm9v+/." + "A" * 43,
        "é.é",
        "\x00",
        "\ud800",
    ],
)
def test_garbage_strings(token: str) -> None:
    assert refused(token) == "link_invalid"


@pytest.mark.parametrize("token", [None, 1, 1.5, True, b"abc.def", ["a"], {"token": "x"}, bytearray(b"x")])
def test_non_str_tokens(token: object) -> None:
    assert refused(token) == "link_invalid"


def _padded_token(spaces: int) -> str:
    """A correctly signed, valid payload made long with JSON whitespace."""
    text = json.dumps(payload_of(student()), separators=(",", ":"))
    body = b64((text[:-1] + " " * spaces + "}").encode())
    return body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())


def test_oversize_token_refused_even_when_signed() -> None:
    fits = _padded_token(3000)
    assert len(fits) <= MAX_TOKEN_CHARS
    assert LinkSigner(SECRET).verify(fits, NOW) == student()
    too_long = _padded_token(MAX_TOKEN_CHARS)
    assert len(too_long) > MAX_TOKEN_CHARS
    assert refused(too_long) == "link_invalid"
    assert refused("A" * 1_000_000) == "link_invalid"


def test_errors_never_show_secret_or_token() -> None:
    token = LinkSigner(SECRET).sign(student())
    for bad in (token[:-2], token + "x", forge({"v": 1})):
        with pytest.raises(LinkError) as caught:
            LinkSigner(SECRET).verify(bad, NOW)
        shown = str(caught.value) + repr(caught.value)
        assert SECRET.decode() not in shown
        assert bad not in shown and bad.split(".")[0] not in shown
        assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert SECRET.decode() not in repr(LinkSigner(SECRET))


# -- strict parsing behind a valid signature ----------------------------------


def test_forged_valid_payload_is_accepted() -> None:
    # The control for the tests below: the forge helper makes tokens the signer accepts.
    assert LinkSigner(SECRET).verify(forge(payload_of(student())), NOW) == student()


def _student_payload(**changes: object) -> dict:
    payload = payload_of(student())
    payload.update(changes)
    return payload


def _exam_payload(**changes: object) -> dict:
    payload = payload_of(student())
    payload["exam"] = {**payload["exam"], **changes}
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        _student_payload(v=2),
        _student_payload(v=True),
        _student_payload(v="1"),
        _student_payload(role="admin"),
        _student_payload(role=["student"]),
        _student_payload(role=None),
        _student_payload(seat=""),
        _student_payload(seat="a b"),
        _student_payload(seat="x" * 65),
        _student_payload(seat=7),
        _student_payload(exp="1800000000"),
        _student_payload(exp=1.8e9),
        _student_payload(exp=True),
        _student_payload(exp=-1),
        _student_payload(exp=2**53 + 1),
        _student_payload(extra=1),
        _student_payload(exam="exam_ABC-123"),
        _student_payload(exam=[]),
        _exam_payload(cap=0),
        _exam_payload(cap=51),
        _exam_payload(cap=True),
        _exam_payload(cap=8.0),
        _exam_payload(cap="8"),
        _exam_payload(kind="essay"),
        _exam_payload(kind=["oral"]),
        _exam_payload(title=""),
        _exam_payload(title="   "),
        _exam_payload(title="x" * 121),
        _exam_payload(title="bad\ntitle"),
        _exam_payload(title="\u202eevil"),
        _exam_payload(note="x" * 501),
        _exam_payload(note="bell\x07"),
        _exam_payload(contact="x" * 501),
        _exam_payload(contact=None),
        _exam_payload(id=""),
        _exam_payload(id="no/slash"),
        _exam_payload(ends_at=None),
        _exam_payload(ends_at=1.5),
        _exam_payload(extra="x"),
        _exam_payload(id_check=1),
        _exam_payload(id_check=0),
        _exam_payload(id_check="true"),
        _exam_payload(id_check=None),
        _exam_payload(id_check=[True]),
        {k: v for k, v in _student_payload().items() if k != "seat"},
        [],
        "student",
        None,
        1,
    ],
)
def test_signed_but_malformed_payload_is_invalid(payload: object) -> None:
    assert refused(forge(payload)) == "link_invalid"


def test_missing_exam_field_is_invalid() -> None:
    payload = payload_of(student())
    del payload["exam"]["contact"]
    assert refused(forge(payload)) == "link_invalid"


def test_payload_not_json_or_not_utf8() -> None:
    for body_bytes in (b"not json", b"\xff\xfe", b'{"v":1,"v":1}', b"NaN", b"[" * 3000):
        body = b64(body_bytes)
        token = body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())
        assert refused(token) == "link_invalid"


def test_duplicate_keys_are_invalid() -> None:
    text = json.dumps(payload_of(student()), separators=(",", ":"))
    doubled = text[:-1] + ',"role":"organiser"}'
    body = b64(doubled.encode())
    token = body + "." + b64(hmac.new(SECRET, body.encode(), hashlib.sha256).digest())
    assert refused(token) == "link_invalid"


# -- creator and exam links ----------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        _student_payload(exam=None),
        _student_payload(role="surveillant", seat="s1", exam=None),
        _student_payload(role="organiser", seat="organiser", exam=None),
        _student_payload(role="organiser", seat="creator"),
        _student_payload(role="student", seat="creator", exam=None),
    ],
    ids=["student-without-exam", "surveillant-without-exam", "organiser-seat-without-exam",
         "creator-with-exam", "student-creator"],
)
def test_creator_rules_on_verify(payload: dict) -> None:
    assert refused(forge(payload)) == "link_invalid"


@pytest.mark.parametrize(
    "capability",
    [
        Capability(role="student", exam=None, seat="student", expires_at=NOW),
        Capability(role="surveillant", exam=None, seat="s1", expires_at=NOW),
        Capability(role="organiser", exam=EXAM, seat="creator", expires_at=NOW),
        Capability(role="organiser", exam=None, seat="organiser", expires_at=NOW),
        Capability(role="admin", exam=EXAM, seat="x", expires_at=NOW),  # type: ignore[arg-type]
        Capability(role="student", exam=EXAM, seat="student", expires_at=1.5),  # type: ignore[arg-type]
        Capability(role="student", exam=dataclasses.replace(EXAM, cap=0), seat="student", expires_at=NOW),
        Capability(role="student", exam=dataclasses.replace(EXAM, title="x" * 121), seat="student", expires_at=NOW),
        Capability(role="student", exam=dataclasses.replace(EXAM, kind="essay"), seat="student", expires_at=NOW),  # type: ignore[arg-type]
        Capability(role="student", exam=dataclasses.replace(EXAM, note="\ud800"), seat="student", expires_at=NOW),
        Capability(role="student", exam=dataclasses.replace(EXAM, id_check=1), seat="student", expires_at=NOW),  # type: ignore[arg-type]
        Capability(role="student", exam=dataclasses.replace(EXAM, id_check=None), seat="student", expires_at=NOW),  # type: ignore[arg-type]
    ],
)
def test_sign_refuses_what_verify_would_refuse(capability: Capability) -> None:
    with pytest.raises(ValueError):
        LinkSigner(SECRET).sign(capability)


def test_creator_link_has_no_exam() -> None:
    signer = LinkSigner(SECRET)
    capability = signer.verify(signer.sign(creator()), NOW)
    assert capability.role == "organiser" and capability.exam is None and capability.seat == "creator"
    assert payload_of(creator())["exam"] is None


# -- signer and ids ------------------------------------------------------------


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * 15])
def test_short_secret_refused(secret: bytes) -> None:
    with pytest.raises(ValueError):
        LinkSigner(secret)


def test_str_secret_refused() -> None:
    with pytest.raises(TypeError):
        LinkSigner("0123456789abcdef0123")  # type: ignore[arg-type]


def test_new_exam_id_is_random_and_url_safe() -> None:
    ids = {new_exam_id() for _ in range(200)}
    assert len(ids) == 200
    for exam_id in ids:
        assert len(exam_id) >= 16
        assert set(exam_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        LinkSigner(SECRET).sign(student(dataclasses.replace(EXAM, exam_id=exam_id)))


def test_clean_text_rules() -> None:
    assert is_clean_text("Zoë de Vries", multiline=False)
    assert is_clean_text("a\nb\tc", multiline=True)
    assert not is_clean_text("a\nb", multiline=False)
    assert not is_clean_text("a\rb", multiline=True)
    assert not is_clean_text("a\x85b", multiline=True)
    assert not is_clean_text("\u2066x", multiline=True)


# -- fuzz ----------------------------------------------------------------------


@settings(max_examples=500)
@given(st.text(max_size=3000))
def test_random_strings_only_raise_link_error(token: str) -> None:
    with pytest.raises(LinkError) as caught:
        LinkSigner(SECRET).verify(token, NOW)
    assert caught.value.code == "link_invalid"


@settings(max_examples=300)
@given(st.from_regex(r"[A-Za-z0-9_-]{0,400}\.[A-Za-z0-9_-]{43}", fullmatch=True))
def test_random_well_shaped_tokens_are_invalid(token: str) -> None:
    assert refused(token) == "link_invalid"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {"v": json_values | st.just(1), "role": json_values | st.sampled_from(["student", "organiser"]),
         "seat": json_values | st.just("s1"), "exp": json_values | st.just(NOW + 5),
         "exam": json_values | st.just(EXAM.to_public()) | st.none()}
    )
    | json_values
)
def test_signed_random_payloads_only_raise_link_error(payload: object) -> None:
    try:
        capability = LinkSigner(SECRET).verify(forge(payload), NOW)
    except LinkError:
        return
    assert isinstance(capability, Capability)
    assert LinkSigner(SECRET).verify(LinkSigner(SECRET).sign(capability), NOW) == capability


@settings(max_examples=200)
@given(
    title=st.text(min_size=1, max_size=120).filter(lambda t: t.strip() and is_clean_text(t, multiline=False)),
    note=st.text(max_size=500).filter(lambda t: is_clean_text(t, multiline=True)),
    cap=st.integers(1, 50),
    kind=st.sampled_from(["written", "oral"]),
    expires_at=st.integers(NOW + 1, 2**53),
    id_check=st.booleans(),
)
def test_any_valid_exam_round_trips(
    title: str, note: str, cap: int, kind: str, expires_at: int, id_check: bool
) -> None:
    exam = ExamSettings(exam_id=new_exam_id(), title=title, kind=kind, cap=cap, note=note, contact="",  # type: ignore[arg-type]
                        ends_at=NOW, id_check=id_check)
    capability = Capability(role="surveillant", exam=exam, seat="s1", expires_at=expires_at)
    signer = LinkSigner(SECRET)
    assert signer.verify(signer.sign(capability), NOW) == capability
