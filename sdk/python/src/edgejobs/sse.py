"""An incremental Server-Sent Events parser (the WHATWG event-stream format), no I/O.

Bytes are fed as they arrive, in chunks that may split a line, a CRLF pair or a UTF-8
character anywhere; complete events come out. Both clients' live streams use it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["ServerEvent", "SseParser"]


@dataclass(frozen=True)
class ServerEvent:
    """One dispatched event: its type (`message` by default), data, and the last `id` seen."""

    event: str
    data: str
    id: Optional[str]
    retry: Optional[int] = None


class SseParser:
    """Feed bytes with `feed`; it returns the events those bytes completed."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._pending_cr = False
        self._event = ""
        self._data: List[str] = []
        self._has_data = False
        #: The last event id (kept across events, as EventSource does), for Last-Event-ID.
        self.last_id: Optional[str] = None
        #: The reconnection time the server asked for, in ms.
        self.retry: Optional[int] = None
        self._first = True

    def feed(self, chunk: bytes) -> List[ServerEvent]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            # A byte order mark may start the stream only.
            if text.startswith("\ufeff"):
                text = text[1:]
            self._first = False
        return self._lines(text)

    def close(self) -> List[ServerEvent]:
        """Ends the stream: an event without its blank line is dropped, as the format says."""
        self._lines(self._decoder.decode(b"", final=True))
        return []

    def _lines(self, text: str) -> List[ServerEvent]:
        out: List[ServerEvent] = []
        if self._pending_cr and text.startswith("\n"):
            # The LF of a CRLF whose CR ended the previous chunk.
            text = text[1:]
        self._pending_cr = False
        self._buf += text
        start = 0
        n = len(self._buf)
        i = 0
        while i < n:
            c = self._buf[i]
            if c == "\r" or c == "\n":
                line = self._buf[start:i]
                if c == "\r":
                    if i + 1 < n:
                        if self._buf[i + 1] == "\n":
                            i += 1
                    else:
                        self._pending_cr = True
                ev = self._line(line)
                if ev is not None:
                    out.append(ev)
                start = i + 1
            i += 1
        self._buf = self._buf[start:]
        return out

    def _line(self, line: str) -> Optional[ServerEvent]:
        if line == "":
            if not self._has_data:
                self._event = ""
                return None
            ev = ServerEvent(self._event or "message", "\n".join(self._data), self.last_id, self.retry)
            self._event, self._data, self._has_data = "", [], False
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry = int(value)
        return None
