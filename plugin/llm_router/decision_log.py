"""The decision log: one JSON line per request, without prompt text unless asked, secrets always masked."""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import IO, Any

import orjson

# PII patterns masked when `redact_pii` is on (prompt text only; ids and numbers of the log are ours).
_PII = [
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "<card>"),
    (re.compile(r"\+?\d[\d ().-]{7,}\d"), "<phone>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"\b(?:sk|pk|rk|key|tok)[-_][A-Za-z0-9_-]{12,}\b"), "<key>"),
]


def redact_pii(text: str) -> str:
    """Mask e-mail addresses, card and phone numbers, IPs and key-like strings."""
    for rx, repl in _PII:
        text = rx.sub(repl, text)
    return text


class SecretMask:
    """Replaces known secret values in any text; refreshed when secrets rotate."""

    def __init__(self, values: list[str] | None = None):
        self.set(values or [])

    def set(self, values: list[str]) -> None:
        vals = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
        self._rx = re.compile("|".join(re.escape(v) for v in vals)) if vals else None

    def __call__(self, text: str) -> str:
        return self._rx.sub("***", text) if self._rx is not None else text


class MaskingFilter(logging.Filter):
    """A logging filter that masks secret values in every record it passes."""

    def __init__(self, mask: SecretMask):
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = self.mask(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


class DecisionLog:
    """Buffered JSON lines; flushed by the state sync loop and on shutdown (no write per request).

    Each flush checks that the file is still the one at the path: after logrotate moves it away (or
    it is deleted), the next flush writes to a new file there, with no signal or restart needed.
    """

    def __init__(self, target: str | None, *, log_prompts: bool = False, redact: bool = True, mask: SecretMask | None = None):
        self.log_prompts = log_prompts
        self.redact = redact
        self.mask = mask or SecretMask()
        self._buf: list[bytes] = []
        self._size = 0
        self._out: IO[bytes] | None
        self._path: str | None = None
        self._ino: tuple[int, int] | None = None
        if target in (None, "", "off"):
            self._out = None
        elif target == "-":
            self._out = sys.stderr.buffer
        else:
            self._path = target
            self._open()

    def _open(self) -> None:
        assert self._path is not None
        self._out = open(self._path, "ab")
        st = os.fstat(self._out.fileno())
        self._ino = (st.st_dev, st.st_ino)

    def _moved(self) -> bool:
        """Whether the path no longer names the open file (rotated away or deleted)."""
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._ino

    @property
    def enabled(self) -> bool:
        return self._out is not None or self._path is not None

    def write(self, record: dict[str, Any], prompt: str | None = None) -> None:
        """Queue one record; the prompt is kept only when log_prompts is on (redacted when redact is on)."""
        if not self.enabled:
            return
        if self.log_prompts and prompt is not None:
            record["prompt"] = redact_pii(prompt) if self.redact else prompt
        line = orjson.dumps(record)
        text = line.decode()
        masked = self.mask(text)
        if masked is not text and masked != text:
            line = masked.encode()
        self._buf.append(line + b"\n")
        self._size += len(line) + 1
        if self._size > 64 * 1024:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered (to a new file at the path if the old one was rotated away)."""
        if not self.enabled or not self._buf:
            return
        data, self._buf, self._size = b"".join(self._buf), [], 0
        try:
            if self._path is not None and (self._out is None or self._moved()):
                if self._out is not None:
                    self._out.close()
                    self._out = None
                self._open()  # a failure here is retried at the next flush
            assert self._out is not None
            self._out.write(data)
            self._out.flush()
        except OSError as exc:
            logging.getLogger("llm_router").warning("decision log write failed (%s); %d bytes dropped",
                                                    exc.strerror or type(exc).__name__, len(data))

    def close(self) -> None:
        self.flush()
        if self._out is not None and self._out is not sys.stderr.buffer:
            self._out.close()
        self._out = self._path = None
