"""Secrets out of text: the one function that masks credentials in URLs, and a log filter.

Every state store URL, error message, reply and log line of the service that may hold a URL
goes through :func:`redact` (the stores' ``url`` attribute is already redacted, the HTTP
app's replies and logs pass through it, and ``fraudseq serve`` adds :class:`RedactingFilter`
to every log handler, uvicorn's included).

>>> redact("redis://default:hunter2@cache:6379/0")
'redis://default:***@cache:6379/0'
>>> redact("Error connecting to rediss://:pw@10.0.0.5/1?password=pw2&prefix=x: refused")
'Error connecting to rediss://:***@10.0.0.5/1?password=***&prefix=x: refused'
>>> redact("sqlite:///state.db")
'sqlite:///state.db'
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "RedactingFilter", "redact"]

MASK = "***"

# scheme://userinfo@ ; the userinfo runs to the last "@" of the authority (a password may
# hold a raw "@"), never past "/", "?", "#" or whitespace.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")
# Query parameters that carry secrets (redis-py reads ?password=).
_SECRET_PARAMS = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pass|pwd|secret|token|api_key|apikey|key)=)[^&;#\s]*",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match) -> str:
    userinfo = match["userinfo"]
    if ":" in userinfo:  # user:password -> user:***
        user = userinfo.split(":", 1)[0]
        return f"{match['scheme']}{user}:{MASK}@"
    # A lone userinfo: redis://secret@host is a password to some clients; mask it too.
    return f"{match['scheme']}{MASK}@" if userinfo else match[0]


def redact(text: str) -> str:
    """`text` with every URL's password (``user:password@``, a lone ``secret@``, and
    ``?password=`` / ``token=`` / ``key=`` query parameters) replaced by ``***``.

    Works on a URL alone (a state store URL) and on free text that quotes URLs (an error
    message, a log line). Idempotent: redacting twice changes nothing more."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(_mask_userinfo, text)
    return _SECRET_PARAMS.sub(lambda m: m["name"] + MASK, text)


class RedactingFilter(logging.Filter):
    """A log filter (for handlers) that redacts each record's message, its arguments and
    its traceback (formatted and masked into ``exc_text``)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        # Each part on its own, so formatters that read `args` (uvicorn's access log) work.
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_safe_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _safe_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _safe_arg(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float) or value is None:
        return value
    text = str(value)  # an exception, a path, ...: as text only when it held a secret
    safe = redact(text)
    return value if safe == text else safe
