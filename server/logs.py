"""Structured logs: one line per event, logfmt (key=value) or JSON.

Our events and the libraries' (grpc logs through the standard library) share one
handler, one format and one level. Log calls pass names, counts and error messages,
never a password or a hash; as a second line of defence, `_redact` blanks anything
shaped like a `{SHA}` hash before a line is rendered, and the AWS SDK, which logs whole
responses at debug level, is held at warning.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
# Libraries that log whole requests and responses at debug level (botocore writes each
# GetSecretValue answer, the SecretString with it): never below warning, whatever the level.
PAYLOAD_LOGGERS = ("botocore", "boto3", "s3transfer")
FORMATS = ("logfmt", "json")
_SHA = re.compile(r"\{SHA\}[A-Za-z0-9+/=]{0,28}")

EventDict = MutableMapping[str, Any]


def _redact(_logger: Any, _method: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str) and "{SHA}" in value:
            event[key] = _SHA.sub("{SHA}<redacted>", value)
    return event


def configure(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Send every log line, ours and the libraries', to `stream` (stderr) in one format."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.LogfmtRenderer(key_order=["ts", "level", "logger", "event"])
    )
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def enabled(level: int) -> bool:
    """Whether events of `level` are logged: skip building lines nobody will see."""
    return logging.getLogger().isEnabledFor(level)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
