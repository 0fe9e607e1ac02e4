"""Text from records (message bodies, tenant and agent ids, dead-letter details) as a terminal may
print it: control characters — ANSI escape sequences, carriage returns, bidirectional overrides —
are shown escaped (`\\x1b`, `\\r`, `\\u202e`) so a record cannot rewrite, hide or reorder what an
operator sees. Letters of every script, emoji and spaces pass unchanged (the zero-width joiners
inside composed emoji are format characters: shown escaped too)."""

from __future__ import annotations

import unicodedata

# Cc: C0/C1 controls (ESC, CR, BEL, ...); Cf: format characters (bidi overrides, zero-width joiners
# used to disguise text); Zl/Zp: line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    out = []
    for ch in text:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def json_escaped(line: bytes) -> bytes:
    """A UTF-8 JSON text with the characters `printable` escapes written as JSON escapes
    (`\\u001b` is already; `\\u202e`, `\\u0085`, `\\u200b` ...): the same document to any parser,
    harmless on a terminal. Outside its strings JSON is ASCII, so every such character is inside
    one and its escape is valid there. Plain ASCII lines (most) are returned as they are."""
    if line.isascii() and b"\x7f" not in line:
        return line
    out = []
    for ch in line.decode():
        if ch > "\x7e" and unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            if code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:  # a surrogate pair, as JSON spells a character beyond the BMP
                code -= 0x10000
                out.append(f"\\u{0xd800 + (code >> 10):04x}\\u{0xdc00 + (code & 0x3ff):04x}")
        else:
            out.append(ch)
    return "".join(out).encode()
