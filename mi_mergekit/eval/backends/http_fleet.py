"""Which server takes the next request of a run spread over OpenAI-compatible servers, and when a
failed one comes back (:mod:`.openai_http`).

Each request goes to the healthy server with the fewest requests in flight; a server that fails
(connection error, idle timeout, broken stream, HTTP 408/409/425/429/5xx: :class:`Retryable`)
leaves the rotation for a back-off or its ``Retry-After``; a server that interrupts a running
stream when another request arrives is sent one request at a time from then on.
"""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: the longest a server stays out of rotation after failures
MAX_COOLDOWN = 60.0


class Retryable(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class Interrupted(Retryable):
    """The server closed the stream itself (``[DONE]``) before every sample finished."""


@dataclass
class Server:
    url: str
    client: object
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    served: int = 0
    #: requests it may have in flight (None: as many as --concurrency); 1 once it interrupted one
    limit: Optional[int] = None


@dataclass
class Fleet:
    """The servers of a run: each request goes to the healthy one with the fewest in flight."""

    servers: List[Server]
    cond: threading.Condition = field(default_factory=threading.Condition)

    def acquire(self) -> Server:
        with self.cond:
            while True:
                now = time.monotonic()
                ready = [s for s in self.servers
                         if s.down_until <= now and (s.limit is None or s.in_flight < s.limit)]
                if ready:
                    server = min(ready, key=lambda s: (s.in_flight, s.failures))
                    server.in_flight += 1
                    return server
                down = [s.down_until - now for s in self.servers if s.down_until > now]
                self.cond.wait(min(down) if down else None)  # else: until a request is released

    def one_at_a_time(self, server: Server) -> bool:
        """After ``server`` interrupted a stream: True (the first time) if other requests were in
        flight on it, which is then sent one request at a time."""
        with self.cond:
            if server.in_flight > 1 and server.limit != 1:
                server.limit = 1
                return True
            return False

    def release(self, server: Server, ok: bool, cooldown: float = 0.0) -> None:
        with self.cond:
            server.in_flight -= 1
            if ok:
                server.failures, server.served = 0, server.served + 1
            else:
                server.failures += 1
                server.down_until = max(server.down_until, time.monotonic() + cooldown)
            self.cond.notify_all()


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
