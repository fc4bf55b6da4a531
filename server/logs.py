"""Structured logs: one line per event, logfmt (key=value) or JSON.

Log calls pass names, counts and error messages, never a password or a hash; as a
second line of defence, `_redact` blanks anything shaped like a `{SHA}` hash.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("logfmt", "json")
_SHA = re.compile(r"\{SHA\}[A-Za-z0-9+/=]{0,28}")


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "{SHA}" in value:
            event[key] = _SHA.sub("{SHA}<redacted>", value)
    return event


def configure(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every log line, ours and the libraries', to `stream` (stderr) in one format."""
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.processors.LogfmtRenderer(key_order=["ts", "level", "event"])
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # grpc and other libraries log through the standard library: same stream, same level.
    logging.basicConfig(
        level=numeric,
        stream=stream or sys.stderr,
        force=True,
        format="level=%(levelname)s logger=%(name)s event=%(message)r",
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
