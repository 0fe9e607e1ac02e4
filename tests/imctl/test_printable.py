"""What imctl prints of a record cannot drive the operator's terminal: control characters in
bodies, ids and dead-letter details are shown escaped; every script's letters pass unchanged."""

from __future__ import annotations

import base64

import pytest
from im_contracts.events import DeadLetter
from imctl.kafka_tools import describe_letter
from imctl.text import json_escaped, printable

pytestmark = pytest.mark.unit

HOSTILE = "ok\x1b[2J\x1b]0;pwned\x07\rnew line\nhidden\u202egnp.exe\u200b\x85end"


def test_control_characters_are_escaped_and_nothing_else_changes():
    shown = printable(HOSTILE)
    assert shown == ("ok\\x1b[2J\\x1b]0;pwned\\x07\\rnew line\\nhidden\\u202egnp.exe\\u200b\\x85end")
    assert all(ch.isprintable() for ch in shown)
    plain = "Ça va? Привет 你好 مرحبا 👋 — tab-free text with spaces"
    assert printable(plain) == plain


def test_a_dead_letter_line_escapes_what_the_record_claimed():
    letter = DeadLetter(tenant_id="acme\x1b[31m", reason="invalid_event", detail="bad field\r\x1b[2K",
                        original_topic="helpdesk.assistance-requests.v1", original_partition=0,
                        original_offset=7, original_value_b64=base64.b64encode(b"{}").decode(),
                        consumer="im-api-assistance")
    line = describe_letter(letter)
    assert "\x1b" not in line and "\r" not in line
    assert "tenant=acme\\x1b[31m" in line and "bad field\\r\\x1b[2K" in line


def test_json_lines_keep_their_meaning_with_control_characters_escaped():
    import json

    doc = {"body": HOSTILE + "\U000e0041\u2028", "plain": "Ça va? 你好 👋"}
    line = (json.dumps(doc, ensure_ascii=False) + "\n").encode()
    escaped = json_escaped(line)
    assert json.loads(escaped) == doc and escaped.endswith(b"\n")
    assert all(ch.isprintable() for ch in escaped.decode().rstrip("\n"))
    assert "\\u202e" in escaped.decode() and "\\udb40\\udc41" in escaped.decode()
    assert "Ça va? 你好 👋" in escaped.decode()  # letters and emoji unchanged
    plain = b'{"type": "message", "body": "hello"}\n'
    assert json_escaped(plain) is plain
