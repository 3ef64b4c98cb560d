"""Internal users, kiosk tokens and the audit log: the only code that reads or writes those three tables.

The tables (``private.app_user``, ``private.kiosk_token``, ``private.audit_log``) are made by migration
0001; this module owns every statement against them, so the rules that keep accounts safe live in one
place rather than in each page that touches a user:

* a password is stored only as an Argon2id hash (argon2-cffi's RFC 9106 defaults), and is re-hashed at
  the next good login when those defaults change;
* a login costs one Argon2 verification whether or not the user exists (unknown names are checked
  against a dummy hash), so response time does not tell an attacker which names are real;
* consecutive failures lock an account for a while, a locked or disabled account refuses even the right
  password, and an address that fails too often is refused outright — counted from the audit log, so the
  limit holds across every worker and restart without another table;
* a kiosk token is shown once and only its SHA-256 is kept, so a copy of the database opens no screen.

Every function takes the engine (or a connection, to join the caller's transaction) explicitly: no
module-level engine, so the CLI, the dashboards and the tests each decide which database they mean.
Every statement is ``text()`` with bound parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, Engine, text

from geodata.codes import USER_ROLES
from geodata.errors import CityGridError
from geodata.settings import Settings, get_settings


class AccountError(CityGridError):
    """A user or kiosk-token change was refused (bad value, duplicate, unknown name); the message says why."""


#: Engine (its own transaction) or Connection (the caller's transaction).
Bind = Engine | Connection

#: The same rule as the CHECK on ``private.app_user.username``, so a bad name fails here with a message.
USERNAME_PATTERN: Final = re.compile(r"[a-z0-9_.-]{3,64}")
MIN_PASSWORD_LENGTH: Final = 10
#: Argon2 hashes a long input cheaply, but nobody types 1,024 characters; longer input is an attack.
MAX_PASSWORD_LENGTH: Final = 1024
MAX_DISPLAY_NAME_LENGTH: Final = 100
MAX_LABEL_LENGTH: Final = 100
#: More failed logins than this from one address within the window and that address is refused.
IP_MAX_FAILURES: Final = 20
IP_WINDOW_MINUTES: Final = 15
#: ``secrets.token_urlsafe(32)`` is 43 characters; anything far outside that is not one of ours.
_TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{20,128}")

#: Audit actions written by this module (pages add their own, e.g. ``export``).
ACTION_LOGIN_SUCCESS: Final = "login.success"
ACTION_LOGIN_FAILURE: Final = "login.failure"
ACTION_LOCKOUT: Final = "login.lockout"
ACTION_LOGIN_REFUSED: Final = "login.refused"

LoginOutcome = Literal["ok", "bad_credentials", "locked", "disabled", "rate_limited"]

_HASHER: Final = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random secret, verified against for unknown users so they cost the same time."""
    return _HASHER.hash(secrets.token_urlsafe(24))


# --- rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    """A user as pages may see one: everything but the password hash."""

    username: str
    display_name: str
    role: str
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    #: 16 hex digits derived from the stored hash: changes whenever the password does, so a session can
    #: notice a password reset; useless for cracking (a truncated digest of a salted hash).
    credential_stamp: str

    def is_locked(self, now: datetime | None = None) -> bool:
        """Whether a lock-out is in force at ``now`` (default: this instant)."""
        now = now or datetime.now(UTC)
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt.

    ``reason`` is for the audit log and the caller's choice of message; a page must show the same text
    for ``bad_credentials`` and ``disabled`` so it never reveals whether a name exists.
    """

    ok: bool
    reason: LoginOutcome
    user: UserRow | None = None

    @property
    def locked(self) -> bool:
        """True when the refusal is a lock-out or an address limit: the page says "try again later"."""
        return self.reason in ("locked", "rate_limited")


@dataclass(frozen=True)
class KioskTokenRow:
    """A kiosk token as listed: never the token, never its hash."""

    token_id: int
    label: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def is_active(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired at ``now`` (default: this instant)."""
        now = now or datetime.now(UTC)
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class AuditRow:
    """One audit entry."""

    audit_id: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    remote_addr: str | None


# Statements are literals (no SQL is ever assembled from strings); changes return the key and the row is
# read back with one of these, so the column list is written once per table.
_SELECT_USERS: Final = text(
    "SELECT username, display_name, role, disabled, failed_logins, locked_until, created_at, last_login_at, "
    "left(encode(sha256(convert_to(password_hash, 'UTF8')), 'hex'), 16) AS credential_stamp "
    "FROM private.app_user WHERE (CAST(:username AS text) IS NULL OR username = :username) ORDER BY username"
)
_SELECT_TOKENS: Final = text(
    "SELECT token_id, label, created_by, created_at, expires_at, revoked_at, last_used_at "
    "FROM private.kiosk_token WHERE (CAST(:token_id AS bigint) IS NULL OR token_id = :token_id) "
    "ORDER BY created_at DESC, token_id DESC"
)


def _fetch_user(conn: Connection, username: str) -> UserRow | None:
    row = conn.execute(_SELECT_USERS, {"username": username}).first()
    return UserRow(**row._mapping) if row else None


def _fetch_token(conn: Connection, token_id: int) -> KioskTokenRow | None:
    row = conn.execute(_SELECT_TOKENS, {"token_id": token_id}).first()
    return KioskTokenRow(**row._mapping) if row else None


@contextmanager
def _begin(bind: Bind) -> Iterator[Connection]:
    """A connection in a transaction: the engine's own (committed on success), or the caller's."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    elif bind.in_transaction():
        yield bind
    else:
        with bind.begin():
            yield bind


# --- validation ---------------------------------------------------------------------------------------


def normalise_username(username: str) -> str:
    """Usernames are lower case without surrounding blanks; ``Zhang.Wei `` and ``zhang.wei`` are one user."""
    return username.strip().lower()


def _check_username(username: str) -> str:
    name = normalise_username(username)
    if not USERNAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"Invalid username {username!r}: use 3 to 64 characters from a-z, 0-9, '_', '.' and '-'."
        )
    return name


def _check_role(role: str) -> str:
    if role not in USER_ROLES:
        raise AccountError(f"Unknown role {role!r}: choose one of {', '.join(USER_ROLES)}.")
    return role


def check_password_strength(password: str, username: str = "") -> None:
    """Refuse passwords a guesser would try first; raise AccountError saying what is wrong.

    The rule is deliberately short (length, more than one kind of character, not the username), because
    the lock-out and address limit do the rest against online guessing.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"The password is too long: use at most {MAX_PASSWORD_LENGTH} characters.")
    classes = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c.isdigit() else "other"
        for c in password
    }
    if len(classes) < 2:
        raise AccountError(
            "The password is too simple: mix at least two of lower case, upper case, digits and symbols."
        )
    name = normalise_username(username)
    if name and name in password.lower():
        raise AccountError("The password must not contain the username.")


def _check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise AccountError(f"A kiosk token needs a label of 1 to {MAX_LABEL_LENGTH} characters, e.g. 大屏-指挥大厅.")
    return label


# --- audit --------------------------------------------------------------------------------------------


def audit(
    bind: Bind, actor: str, action: str, detail: dict[str, Any] | None = None, remote_addr: str | None = None
) -> int:
    """Append one entry to the audit log and return its id.

    Given a connection inside a transaction, the entry commits or rolls back with the change it records.
    """
    payload = json.dumps(detail or {}, ensure_ascii=False, default=str)
    with _begin(bind) as conn:
        return int(
            conn.execute(
                text(
                    "INSERT INTO private.audit_log (actor, action, detail, remote_addr) "
                    "VALUES (:actor, :action, CAST(:detail AS jsonb), :remote_addr) RETURNING audit_id"
                ),
                {"actor": actor[:200], "action": action[:100], "detail": payload, "remote_addr": remote_addr},
            ).scalar_one()
        )


def recent_audit(
    bind: Bind, limit: int = 100, *, action: str | None = None, actor: str | None = None
) -> list[AuditRow]:
    """The newest audit entries first, optionally of one action and/or one actor (at most 10,000)."""
    limit = max(1, min(int(limit), 10_000))
    with _begin(bind) as conn:
        rows = conn.execute(
            text(
                "SELECT audit_id, at, actor, action, detail, remote_addr FROM private.audit_log "
                "WHERE (CAST(:action AS text) IS NULL OR action = :action) "
                "AND (CAST(:actor AS text) IS NULL OR actor = :actor) "
                "ORDER BY at DESC, audit_id DESC LIMIT :limit"
            ),
            {"action": action, "actor": actor, "limit": limit},
        ).all()
    return [AuditRow(**row._mapping) for row in rows]


# --- users --------------------------------------------------------------------------------------------


def add_user(
    bind: Bind,
    username: str,
    password: str,
    role: str,
    display_name: str = "",
    *,
    actor: str = "system",
    remote_addr: str | None = None,
) -> UserRow:
    """Create a user with an Argon2id hash of ``password``; AccountError on a bad value or a taken name."""
    name = _check_username(username)
    _check_role(role)
    check_password_strength(password, name)
    display_name = display_name.strip()
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise AccountError(f"The display name is too long: use at most {MAX_DISPLAY_NAME_LENGTH} characters.")
    password_hash = _HASHER.hash(password)
    with _begin(bind) as conn:
        inserted = conn.execute(
            text(
                "INSERT INTO private.app_user (username, display_name, role, password_hash) "
                "VALUES (:username, :display_name, :role, :password_hash) "
                "ON CONFLICT (username) DO NOTHING RETURNING username"
            ),
            {"username": name, "display_name": display_name, "role": role, "password_hash": password_hash},
        ).first()
        if inserted is None:
            raise AccountError(f"The user {name!r} already exists.")
        audit(conn, actor, "user.add", {"username": name, "role": role}, remote_addr)
        user = _fetch_user(conn, name)
    assert user is not None
    return user


def get_user(bind: Bind, username: str) -> UserRow | None:
    """One user by name (normalised), or None."""
    with _begin(bind) as conn:
        return _fetch_user(conn, normalise_username(username))


def list_users(bind: Bind) -> list[UserRow]:
    """Every user, by name; hashes are never part of the answer."""
    with _begin(bind) as conn:
        rows = conn.execute(_SELECT_USERS, {"username": None}).all()
    return [UserRow(**row._mapping) for row in rows]


_DISABLE: Final = text("UPDATE private.app_user SET disabled = true WHERE username = :username RETURNING username")
_ENABLE: Final = text(
    "UPDATE private.app_user SET disabled = false, failed_logins = 0, locked_until = NULL "
    "WHERE username = :username RETURNING username"
)
_SET_PASSWORD: Final = text(
    "UPDATE private.app_user SET password_hash = :password_hash, failed_logins = 0, locked_until = NULL "
    "WHERE username = :username RETURNING username"
)


def _change_user(
    bind: Bind, username: str, statement: Any, params: dict[str, Any], action: str, actor: str,
    remote_addr: str | None,
) -> UserRow:
    """Run one of the UPDATEs above on one user, audited in the same transaction."""
    name = normalise_username(username)
    with _begin(bind) as conn:
        if conn.execute(statement, {**params, "username": name}).first() is None:
            raise AccountError(f"There is no user {name!r}.")
        audit(conn, actor, action, {"username": name}, remote_addr)
        user = _fetch_user(conn, name)
    assert user is not None
    return user


def disable_user(bind: Bind, username: str, *, actor: str = "system", remote_addr: str | None = None) -> UserRow:
    """Stop a user logging in (their open sessions end at the next check); the row and its audit stay."""
    return _change_user(bind, username, _DISABLE, {}, "user.disable", actor, remote_addr)


def enable_user(bind: Bind, username: str, *, actor: str = "system", remote_addr: str | None = None) -> UserRow:
    """Let a user log in again; also lifts a lock-out, which is how an administrator unlocks early."""
    return _change_user(bind, username, _ENABLE, {}, "user.enable", actor, remote_addr)


def set_password(
    bind: Bind, username: str, password: str, *, actor: str = "system", remote_addr: str | None = None
) -> UserRow:
    """Replace a user's password (same strength rule as add_user); clears failures and any lock-out.

    The user's other sessions end at their next check, since the credential stamp changes.
    """
    name = normalise_username(username)
    check_password_strength(password, name)
    return _change_user(
        bind, name, _SET_PASSWORD, {"password_hash": _HASHER.hash(password)}, "user.password", actor, remote_addr
    )


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_COUNT_IP_FAILURES: Final = text(
    "SELECT count(*) FROM private.audit_log WHERE action = :action "
    "AND remote_addr = :addr AND at > now() - make_interval(mins => :window)"
)
_COUNT_NAME_FAILURES: Final = text(
    "SELECT count(*) FROM private.audit_log WHERE actor = :actor AND action = :action "
    "AND at > now() - make_interval(mins => :window)"
)
_LOCK_FOR_LOGIN: Final = text(
    "SELECT password_hash, failed_logins, disabled, coalesce(locked_until > now(), false) AS locked "
    "FROM private.app_user WHERE username = :username FOR UPDATE"
)
_LOCK_OUT: Final = text(
    "UPDATE private.app_user SET failed_logins = 0, locked_until = now() + make_interval(mins => :minutes) "
    "WHERE username = :username"
)
_COUNT_FAILURE: Final = text("UPDATE private.app_user SET failed_logins = :failures WHERE username = :username")
_LOGIN_OK: Final = text(
    "UPDATE private.app_user SET failed_logins = 0, locked_until = NULL, last_login_at = now(), "
    "password_hash = coalesce(CAST(:new_hash AS text), password_hash) WHERE username = :username"
)


def verify_login(
    bind: Bind,
    username: str,
    password: str,
    remote_addr: str | None,
    *,
    settings: Settings | None = None,
    ip_max_failures: int = IP_MAX_FAILURES,
    ip_window_minutes: int = IP_WINDOW_MINUTES,
) -> LoginResult:
    """Check a login and record it: counters, lock-out, last login, re-hash, and the audit entries.

    The audit entries are written here, in the transaction that changes the counters, because the address
    limit and the lock-out of unknown names are counted from them: ``login.failure`` for each wrong
    password (or disabled account), ``login.lockout`` when a lock starts, ``login.refused`` for an attempt
    turned away by a lock or the address limit, ``login.success``.

    Unknown names behave like real ones as far as a client can tell: one Argon2 verification, and a
    "locked" answer once they have failed ``login_max_failures`` times within ``login_lockout_minutes``.
    """
    settings = settings or get_settings()
    max_failures, lock_minutes = settings.login_max_failures, settings.login_lockout_minutes
    name = normalise_username(username)
    valid_name = bool(USERNAME_PATTERN.fullmatch(name))
    actor = name if valid_name else "(invalid)"
    password = password[: MAX_PASSWORD_LENGTH + 1]  # longer ones were never accepted: still wrong

    with _begin(bind) as conn:

        def record(action: str, **detail: Any) -> None:
            audit(conn, actor, action, detail, remote_addr)

        if remote_addr:
            ip_failures = conn.execute(
                _COUNT_IP_FAILURES,
                {"action": ACTION_LOGIN_FAILURE, "addr": remote_addr, "window": ip_window_minutes},
            ).scalar_one()
            if ip_failures >= ip_max_failures:
                record(ACTION_LOGIN_REFUSED, reason="rate_limited")
                return LoginResult(False, "rate_limited")

        row = conn.execute(_LOCK_FOR_LOGIN, {"username": name}).first() if valid_name else None

        if row is None:
            _verify(_dummy_hash(), password)
            recent = conn.execute(
                _COUNT_NAME_FAILURES, {"actor": actor, "action": ACTION_LOGIN_FAILURE, "window": lock_minutes}
            ).scalar_one()
            if valid_name and recent >= max_failures:
                record(ACTION_LOGIN_REFUSED, reason="locked")
                return LoginResult(False, "locked")
            record(ACTION_LOGIN_FAILURE, reason="unknown_user")
            if valid_name and recent + 1 >= max_failures:
                record(ACTION_LOCKOUT, minutes=lock_minutes)
                return LoginResult(False, "locked")
            return LoginResult(False, "bad_credentials")

        good = _verify(row.password_hash, password)  # always, so every path costs one verification

        if row.disabled:
            record(ACTION_LOGIN_FAILURE, reason="disabled")
            return LoginResult(False, "disabled", _fetch_user(conn, name))
        if row.locked:
            record(ACTION_LOGIN_REFUSED, reason="locked")
            return LoginResult(False, "locked", _fetch_user(conn, name))
        if not good:
            failures = row.failed_logins + 1
            record(ACTION_LOGIN_FAILURE, reason="bad_password", failures=failures)
            if failures >= max_failures:
                conn.execute(_LOCK_OUT, {"username": name, "minutes": lock_minutes})
                record(ACTION_LOCKOUT, minutes=lock_minutes)
                return LoginResult(False, "locked", _fetch_user(conn, name))
            conn.execute(_COUNT_FAILURE, {"username": name, "failures": failures})
            return LoginResult(False, "bad_credentials", _fetch_user(conn, name))

        new_hash = _HASHER.hash(password) if _HASHER.check_needs_rehash(row.password_hash) else None
        conn.execute(_LOGIN_OK, {"username": name, "new_hash": new_hash})
        record(ACTION_LOGIN_SUCCESS, rehashed=new_hash is not None)
        return LoginResult(True, "ok", _fetch_user(conn, name))


# --- kiosk tokens -------------------------------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_kiosk_token(
    bind: Bind,
    label: str,
    created_by: str,
    expires_at: datetime | None = None,
    *,
    remote_addr: str | None = None,
) -> str:
    """Make a kiosk token and return it — the only time it exists in clear; only its SHA-256 is stored.

    ``created_by`` must be an existing user (the table's foreign key); ``expires_at`` must carry a time
    zone and lie in the future, or be None for a token that lasts until revoked.
    """
    label = _check_label(label)
    creator = normalise_username(created_by)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise AccountError("expires_at needs a time zone (e.g. datetime(..., tzinfo=ZoneInfo('Asia/Shanghai'))).")
        if expires_at <= datetime.now(UTC):
            raise AccountError("expires_at lies in the past: the token would never open anything.")
    token = secrets.token_urlsafe(32)
    with _begin(bind) as conn:
        if _fetch_user(conn, creator) is None:
            raise AccountError(f"There is no user {creator!r} to issue the token.")
        token_id = conn.execute(
            text(
                "INSERT INTO private.kiosk_token (token_sha256, label, created_by, expires_at) "
                "VALUES (:digest, :label, :created_by, :expires_at) RETURNING token_id"
            ),
            {"digest": _token_digest(token), "label": label, "created_by": creator, "expires_at": expires_at},
        ).scalar_one()
        audit(conn, creator, "kiosk.issue", {"token_id": token_id, "label": label, "expires_at": expires_at},
              remote_addr)
    return token


def revoke_kiosk_token(
    bind: Bind, token_id: int, *, actor: str = "system", remote_addr: str | None = None
) -> KioskTokenRow:
    """Revoke a token (kept for the record); screens using it lose access within a minute.

    Revoking an already revoked token changes nothing; an unknown id raises AccountError.
    """
    with _begin(bind) as conn:
        revoked = conn.execute(
            text(
                "UPDATE private.kiosk_token SET revoked_at = coalesce(revoked_at, now()) "
                "WHERE token_id = :token_id RETURNING token_id"
            ),
            {"token_id": int(token_id)},
        ).first()
        if revoked is None:
            raise AccountError(f"There is no kiosk token {token_id}.")
        audit(conn, actor, "kiosk.revoke", {"token_id": int(token_id)}, remote_addr)
        row = _fetch_token(conn, int(token_id))
    assert row is not None
    return row


def list_kiosk_tokens(bind: Bind) -> list[KioskTokenRow]:
    """Every token, newest first, without token or hash."""
    with _begin(bind) as conn:
        rows = conn.execute(_SELECT_TOKENS, {"token_id": None}).all()
    return [KioskTokenRow(**row._mapping) for row in rows]


_USE_TOKEN_BY_DIGEST: Final = text(
    "UPDATE private.kiosk_token SET last_used_at = now() WHERE token_sha256 = :digest "
    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) RETURNING token_id"
)
_USE_TOKEN_BY_ID: Final = text(
    "UPDATE private.kiosk_token SET last_used_at = now() WHERE token_id = :token_id "
    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) RETURNING token_id"
)


def check_kiosk_token(bind: Bind, token: str) -> KioskTokenRow | None:
    """The row of an active (not revoked, not expired) token, marking it used; None for anything else."""
    if not isinstance(token, str) or not _TOKEN_PATTERN.fullmatch(token):
        return None
    with _begin(bind) as conn:
        token_id = conn.execute(_USE_TOKEN_BY_DIGEST, {"digest": _token_digest(token)}).scalar()
        return _fetch_token(conn, token_id) if token_id is not None else None


def check_kiosk_token_id(bind: Bind, token_id: int) -> KioskTokenRow | None:
    """Like check_kiosk_token, by id: how an open kiosk session re-checks its token without keeping it."""
    with _begin(bind) as conn:
        found = conn.execute(_USE_TOKEN_BY_ID, {"token_id": int(token_id)}).scalar()
        return _fetch_token(conn, found) if found is not None else None
