"""Sessions of the Service Layer emulator: login (credentials compared in constant time), the
session check of every request (`B1SESSION` and `ROUTEID` cookies, sliding expiration after
`session_timeout_min`) and logout. `SapB1Emulator` inherits them; its `__init__` sets up the state
they use (`_sessions`, `_sessions_lock`, credentials, `clock`, `stats`).
"""

from __future__ import annotations

import hmac
import uuid

from sap_ometria_assets.emulators.sap_b1.wire import MSG_INVALID_SESSION, ROUTE_ID, _Reply


class SessionsMixin:
    """Login, session check and logout of `SapB1Emulator`."""

    def kill_sessions(self) -> None:
        with self._sessions_lock:
            self._sessions.clear()

    # -- sessions ---------------------------------------------------------------------------
    def _login(self, body: dict) -> str | None:
        ok = (
            isinstance(body, dict)
            and hmac.compare_digest(str(body.get("CompanyDB", "")).encode(), self.company_db.encode())
            and hmac.compare_digest(str(body.get("UserName", "")).encode(), self.username.encode())
            and hmac.compare_digest(str(body.get("Password", "")).encode(), self._password)
        )
        if not ok:
            self.stats._add(failed_logins=1)
            return None
        sid = str(uuid.uuid4())
        now = self.clock()
        with self._sessions_lock:
            if len(self._sessions) > 256:  # forget sessions that timed out long ago
                limit = self.session_timeout_min * 60
                self._sessions = {k: v for k, v in self._sessions.items() if now - v <= limit}
            self._sessions[sid] = now
        self.stats._add(logins=1)
        return sid

    def _check_session(self, cookies: dict[str, str]) -> str:
        sid = cookies.get("B1SESSION")
        if not sid or cookies.get("ROUTEID") != ROUTE_ID:
            raise _Reply(401, 301, MSG_INVALID_SESSION)
        now = self.clock()
        with self._sessions_lock:
            last = self._sessions.get(sid)
            if last is None or now - last > self.session_timeout_min * 60:
                self._sessions.pop(sid, None)
                raise _Reply(401, 301, MSG_INVALID_SESSION)
            self._sessions[sid] = now  # sliding expiration
        return sid

    def _logout(self, sid: str) -> None:
        with self._sessions_lock:
            self._sessions.pop(sid, None)
        self.stats._add(logouts=1)

