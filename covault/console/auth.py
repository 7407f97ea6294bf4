"""Who may use the console: the holder of the one-time token printed at start.

``GET /login?token=T`` exchanges the token (once) for a session: a random id in an HttpOnly,
SameSite=Strict cookie and a CSRF token that every form carries. Every other request needs the
session; every POST also needs its CSRF token. Secrets come from :mod:`secrets` and are compared
in constant time; nothing about a session leaves the process.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

COOKIE = "covault_console"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ConsoleError(Exception):
    """The console cannot start (a host other than the loopback interface, a missing extra)."""


def check_loopback(host: str) -> str:
    """``host`` if it is the loopback interface; ConsoleError otherwise (the console has no
    remote access: forward its port over SSH instead)."""
    if host not in LOOPBACK:
        raise ConsoleError(
            f"covault console serves on the loopback interface only ({', '.join(LOOPBACK)}), "
            f"not {host!r}: reach it from another host by SSH port forwarding (docs/console.md)"
        )
    return host


@dataclass
class Gate:
    """The login token and the sessions of one console process."""

    token: str | None = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    sessions: dict[str, str] = field(default_factory=dict, repr=False)  # session id -> its CSRF token
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def login(self, token: str | None) -> str | None:
        """A new session id for the login ``token``, which is then spent (by one request only,
        however many arrive at once); None if it is wrong or spent already."""
        with self.lock:
            if self.token is None or token is None or not _same(token, self.token):
                return None
            self.token = None
            sid = secrets.token_urlsafe(32)
            self.sessions[sid] = secrets.token_urlsafe(32)
            return sid

    def csrf(self, sid: str | None) -> str | None:
        """The CSRF token of session ``sid``; None if there is no such session."""
        if not sid:
            return None
        with self.lock:
            known_sessions = list(self.sessions.items())
        for known, csrf in known_sessions:
            if _same(known, sid):
                return csrf
        return None

    def check_form(self, sid: str | None, sent: str | None) -> bool:
        """Whether a form posted in session ``sid`` carries that session's CSRF token."""
        csrf = self.csrf(sid)
        return csrf is not None and sent is not None and _same(csrf, sent)


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (any characters)."""
    return secrets.compare_digest(a.encode(), b.encode())
