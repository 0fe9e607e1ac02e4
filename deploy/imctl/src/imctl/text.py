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
