"""User names Envoy or RFC 7617 cannot take, one of each kind, by what is wrong with them.

The compiler's examples (tests/test_compiler.py), the generated policies and credential
columns (tests/test_properties.py) and the batch Envoy validates (tests/test_envoy_accepts.py)
use the same names. The end-to-end corpus has its own list, with labels that name its cases
(`HOSTILE_USER_NAMES` in tests/support/hostile_cases.py).
"""

from __future__ import annotations

HOSTILE_USERNAMES = {
    "colon": "a:b",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "trailing carriage return": "user\r",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "leading #": "#root",
    "leading space": " user",
    "trailing space": "user ",
    "tab": "us\ter",
    "empty": "",
    "zero-width joiner": "us\u200der",
    "right-to-left override": "\u202euser",
    "not NFC": "ju\u0308rgen",
    "lone surrogate": "\ud800",
    "too long": "u" * 257,
}
