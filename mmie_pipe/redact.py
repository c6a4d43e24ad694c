"""Secrets never leave the process in a message: every error the tool writes (record errors, the
manifest, the log, the terminal) passes through `redact` first. A server's error body may quote
the request back, key included."""

from __future__ import annotations

import logging
import os
import re

MASK = "[redacted]"
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[redacted\])[A-Za-z0-9._~+/=:-]{4,}")
_PROVIDER_KEY = re.compile(r"\b(sk|rk|pk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{8,}")
_ASSIGNED = re.compile(
    r"(?i)((?:api[-_]?key|x-api-key|access[-_]?token|auth[-_]?token|secret|password)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\[redacted\])[^\"'\s,;}&]{4,}"
)
# The password in a URL's user part (redis://user:password@host, https://u:p@proxy).
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)(?!\[redacted\]@)[^@\s/]+@", re.IGNORECASE)
_MIN_SECRET_LEN = 8


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    for value in _secret_values():
        if value in text:
            text = text.replace(value, MASK)
    text = _BEARER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    text = _PROVIDER_KEY.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}{MASK}@", text)
    return _ASSIGNED.sub(lambda m: f"{m[1]}{MASK}", text)


class RedactingFilter(logging.Filter):
    """Installed on the CLI's log handler: log lines are redacted like every other message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
