"""Accounts, kiosk tokens and the audit log against the real database (``conn``: rolled back per test)."""

from __future__ import annotations

import hashlib
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Connection, text

from geodata import accounts
from geodata.accounts import AccountError
from geodata.errors import CityGridError
from geodata.settings import Settings

PASSWORD = "Zhongshan-Rd-88"


@pytest.fixture()
def lock_settings(settings: Settings) -> Settings:
    """A short fuse so lock-out tests need few (slow, Argon2) attempts."""
    return settings.model_copy(update={"login_max_failures": 3, "login_lockout_minutes": 15})


def stored_hash(conn: Connection, username: str) -> str:
    return conn.execute(
        text("SELECT password_hash FROM private.app_user WHERE username = :u"), {"u": username}
    ).scalar_one()


def audit_rows(conn: Connection, actor: str) -> list[tuple[str, dict, str | None]]:
    rows = conn.execute(
        text("SELECT action, detail, remote_addr FROM private.audit_log WHERE actor = :a ORDER BY audit_id"),
        {"a": actor},
    ).all()
    return [tuple(row) for row in rows]


# --- users and passwords ----------------------------------------------------------------------------


def test_hash_is_argon2id_and_never_the_password(conn: Connection) -> None:
    user = accounts.add_user(conn, "Wang.Fang ", PASSWORD, "planner", "王芳")
    assert user.username == "wang.fang" and user.display_name == "王芳" and user.role == "planner"
    password_hash = stored_hash(conn, "wang.fang")
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash
    assert PasswordHasher().verify(password_hash, PASSWORD)
    # No row a page sees carries the hash.
    listed = [u for u in accounts.list_users(conn) if u.username == "wang.fang"]
    assert len(listed) == 1
    assert not hasattr(listed[0], "password_hash")
    assert password_hash not in repr(listed[0])
    assert ("user.add", {"username": "wang.fang", "role": "planner"}, None) in audit_rows(conn, "system")


def test_duplicate_user_is_refused(conn: Connection) -> None:
    accounts.add_user(conn, "li.lei", PASSWORD, "leader")
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_user(conn, "LI.LEI", "Another-Pass-1", "planner")
    assert issubclass(AccountError, CityGridError)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Short-1", "too short"),
        ("abcdefghijkl", "too simple"),
        ("ABCDEFGHIJKL", "too simple"),
        ("123456789012", "too simple"),
        ("zhao.minXYZ-1", "must not contain the username"),
        ("x1" * 600, "too long"),
    ],
)
def test_weak_password_is_refused(conn: Connection, password: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        accounts.add_user(conn, "zhao.min", password, "planner")
    assert accounts.get_user(conn, "zhao.min") is None


@pytest.mark.parametrize(
    ("username", "role", "message"),
    [("ab", "planner", "Invalid username"), ("张三", "planner", "Invalid username"),
     ("has space", "planner", "Invalid username"), ("sun.li", "mayor", "Unknown role")],
)
def test_bad_username_or_role_is_refused(conn: Connection, username: str, role: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        accounts.add_user(conn, username, PASSWORD, role)


def test_login_success_resets_counter_and_sets_last_login(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "chen.jing", PASSWORD, "planner")
    bad = accounts.verify_login(conn, "chen.jing", "wrong-Password-1", "10.0.1.1", settings=lock_settings)
    assert (bad.ok, bad.reason, bad.user and bad.user.failed_logins) == (False, "bad_credentials", 1)
    good = accounts.verify_login(conn, " Chen.Jing", PASSWORD, "10.0.1.1", settings=lock_settings)
    assert good.ok and good.reason == "ok" and good.user is not None
    assert good.user.failed_logins == 0 and good.user.last_login_at is not None
    actions = [action for action, _detail, _addr in audit_rows(conn, "chen.jing")]
    assert actions == ["login.failure", "login.success"]


def test_lockout_after_max_failures_and_unlock_after_period(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "zhou.qiang", PASSWORD, "leader")
    reasons = [
        accounts.verify_login(conn, "zhou.qiang", f"Wrong-pass-{i}", "10.0.2.1", settings=lock_settings).reason
        for i in range(3)
    ]
    assert reasons == ["bad_credentials", "bad_credentials", "locked"]
    user = accounts.get_user(conn, "zhou.qiang")
    assert user is not None and user.is_locked() and user.locked_until is not None
    assert user.locked_until > datetime.now(UTC) + timedelta(minutes=14)

    # Locked: even the right password fails, and the attempt is recorded as refused.
    locked = accounts.verify_login(conn, "zhou.qiang", PASSWORD, "10.0.2.1", settings=lock_settings)
    assert (locked.ok, locked.reason, locked.locked) == (False, "locked", True)
    actions = [action for action, _d, _a in audit_rows(conn, "zhou.qiang")]
    assert actions[-3:] == ["login.failure", "login.lockout", "login.refused"]

    # The period passes (moved in the database rather than slept through).
    conn.execute(
        text("UPDATE private.app_user SET locked_until = now() - interval '1 second' WHERE username = 'zhou.qiang'")
    )
    assert accounts.verify_login(conn, "zhou.qiang", PASSWORD, "10.0.2.1", settings=lock_settings).ok


def test_enable_user_lifts_a_lockout(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "he.ping", PASSWORD, "planner")
    for i in range(3):
        accounts.verify_login(conn, "he.ping", f"Wrong-pass-{i}", "10.0.3.1", settings=lock_settings)
    assert accounts.verify_login(conn, "he.ping", PASSWORD, "10.0.3.1", settings=lock_settings).reason == "locked"
    accounts.enable_user(conn, "he.ping", actor="admin")
    assert accounts.verify_login(conn, "he.ping", PASSWORD, "10.0.3.1", settings=lock_settings).ok


def test_disabled_user_cannot_log_in(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "guo.hua", PASSWORD, "planner")
    disabled = accounts.disable_user(conn, "guo.hua", actor="admin", remote_addr="10.0.4.9")
    assert disabled.disabled
    result = accounts.verify_login(conn, "guo.hua", PASSWORD, "10.0.4.1", settings=lock_settings)
    assert (result.ok, result.reason, result.locked) == (False, "disabled", False)
    assert audit_rows(conn, "guo.hua")[-1] == ("login.failure", {"reason": "disabled"}, "10.0.4.1")
    assert ("user.disable", {"username": "guo.hua"}, "10.0.4.9") in audit_rows(conn, "admin")
    accounts.enable_user(conn, "guo.hua")
    assert accounts.verify_login(conn, "guo.hua", PASSWORD, "10.0.4.1", settings=lock_settings).ok


def test_unknown_user_fails_alike_and_locks_alike(conn: Connection, lock_settings: Settings) -> None:
    reasons = [
        accounts.verify_login(conn, "no.such.user", f"Wrong-pass-{i}", "10.0.5.1", settings=lock_settings).reason
        for i in range(4)
    ]
    # Same answers a real user gets: two plain failures, then "locked" — the name's existence stays hidden.
    assert reasons == ["bad_credentials", "bad_credentials", "locked", "locked"]
    actions = [action for action, _d, _a in audit_rows(conn, "no.such.user")]
    assert actions == ["login.failure", "login.failure", "login.failure", "login.lockout", "login.refused"]
    invalid = accounts.verify_login(conn, "<script>", "x", "10.0.5.1", settings=lock_settings)
    assert invalid.reason == "bad_credentials" and invalid.user is None


def test_unknown_user_costs_an_argon2_verification(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "ma.lin", PASSWORD, "planner")
    settings = lock_settings.model_copy(update={"login_max_failures": 100})

    def timed(username: str, n: int) -> float:
        started = time.perf_counter()
        accounts.verify_login(conn, username, f"Wrong-pass-{n}", f"10.0.6.{n}", settings=settings)
        return time.perf_counter() - started

    known = statistics.median(timed("ma.lin", n) for n in range(3))
    unknown = statistics.median(timed(f"ghost{n}", n) for n in range(3))
    assert unknown > known * 0.4, (known, unknown)


def test_address_limit_counts_failures_from_the_audit_log(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "yang.bo", PASSWORD, "planner")
    for n in range(accounts.IP_MAX_FAILURES):
        accounts.audit(conn, f"guess{n}", accounts.ACTION_LOGIN_FAILURE, {"reason": "unknown_user"}, "10.0.7.7")
    refused = accounts.verify_login(conn, "yang.bo", PASSWORD, "10.0.7.7", settings=lock_settings)
    assert (refused.ok, refused.reason, refused.locked) == (False, "rate_limited", True)
    assert audit_rows(conn, "yang.bo")[-1] == ("login.refused", {"reason": "rate_limited"}, "10.0.7.7")
    # Another address is not affected, and the user's own counter was not touched.
    assert accounts.verify_login(conn, "yang.bo", PASSWORD, "10.0.7.8", settings=lock_settings).ok
    # Failures older than the window no longer count.
    conn.execute(
        text("UPDATE private.audit_log SET at = at - interval '16 minutes' WHERE remote_addr = '10.0.7.7'")
    )
    assert accounts.verify_login(conn, "yang.bo", PASSWORD, "10.0.7.7", settings=lock_settings).ok


def test_set_password_changes_hash_and_stamp(conn: Connection, lock_settings: Settings) -> None:
    before = accounts.add_user(conn, "lu.xin", PASSWORD, "administrator")
    with pytest.raises(AccountError, match="too short"):
        accounts.set_password(conn, "lu.xin", "short")
    after = accounts.set_password(conn, "lu.xin", "New-Password-2024", actor="admin")
    assert after.credential_stamp != before.credential_stamp
    assert not accounts.verify_login(conn, "lu.xin", PASSWORD, "10.0.8.1", settings=lock_settings).ok
    assert accounts.verify_login(conn, "lu.xin", "New-Password-2024", "10.0.8.1", settings=lock_settings).ok
    with pytest.raises(AccountError, match="no user"):
        accounts.set_password(conn, "nobody.here", "New-Password-2024")
    with pytest.raises(AccountError, match="no user"):
        accounts.disable_user(conn, "nobody.here")


def test_old_argon2_parameters_are_rehashed_at_login(conn: Connection, lock_settings: Settings) -> None:
    accounts.add_user(conn, "tang.yu", PASSWORD, "planner")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    conn.execute(text("UPDATE private.app_user SET password_hash = :h WHERE username = 'tang.yu'"), {"h": weak})
    assert accounts.verify_login(conn, "tang.yu", PASSWORD, "10.0.9.1", settings=lock_settings).ok
    renewed = stored_hash(conn, "tang.yu")
    assert renewed != weak and not PasswordHasher().check_needs_rehash(renewed)
    assert audit_rows(conn, "tang.yu")[-1][1] == {"rehashed": True}


def test_engine_commits_its_own_transaction(store) -> None:  # type: ignore[no-untyped-def]
    name = f"eng_{uuid.uuid4().hex[:8]}"
    accounts.add_user(store.writer, name, PASSWORD, "planner")
    with store.writer.connect() as other:
        assert accounts.get_user(other, name) is not None


# --- kiosk tokens -----------------------------------------------------------------------------------


def test_kiosk_token_only_its_hash_is_stored(conn: Connection) -> None:
    accounts.add_user(conn, "admin.k", PASSWORD, "administrator")
    token = accounts.issue_kiosk_token(conn, "大屏-指挥大厅", "admin.k")
    assert len(token) >= 43
    stored = conn.execute(text("SELECT row_to_json(k)::text FROM private.kiosk_token k")).scalars().all()
    assert len(stored) == 1 and token not in stored[0]
    digest = conn.execute(text("SELECT token_sha256 FROM private.kiosk_token")).scalar_one()
    assert digest == hashlib.sha256(token.encode()).hexdigest()

    row = accounts.check_kiosk_token(conn, token)
    assert row is not None and row.label == "大屏-指挥大厅" and row.created_by == "admin.k"
    assert row.last_used_at is not None and row.is_active()
    assert [t.token_id for t in accounts.list_kiosk_tokens(conn)] == [row.token_id]
    assert accounts.check_kiosk_token_id(conn, row.token_id) is not None
    assert ("kiosk.issue", row.token_id) in [(a, d.get("token_id")) for a, d, _r in audit_rows(conn, "admin.k")]


def test_revoked_expired_and_wrong_tokens_are_refused(conn: Connection) -> None:
    accounts.add_user(conn, "admin.r", PASSWORD, "administrator")
    revoked = accounts.issue_kiosk_token(conn, "screen A", "admin.r")
    expiring = accounts.issue_kiosk_token(conn, "screen B", "admin.r", datetime.now(UTC) + timedelta(hours=1))
    revoked_row = accounts.check_kiosk_token(conn, revoked)
    expiring_row = accounts.check_kiosk_token(conn, expiring)
    assert revoked_row is not None and expiring_row is not None

    after = accounts.revoke_kiosk_token(conn, revoked_row.token_id, actor="admin.r")
    assert after.revoked_at is not None and not after.is_active()
    assert accounts.check_kiosk_token(conn, revoked) is None
    assert accounts.check_kiosk_token_id(conn, revoked_row.token_id) is None
    accounts.revoke_kiosk_token(conn, revoked_row.token_id)  # again: no change, no error

    conn.execute(
        text("UPDATE private.kiosk_token SET expires_at = now() - interval '1 second' WHERE token_id = :i"),
        {"i": expiring_row.token_id},
    )
    assert accounts.check_kiosk_token(conn, expiring) is None

    for wrong in ("", "x", expiring[:-1] + ("A" if expiring[-1] != "A" else "B"), "a" * 5000, "../../etc/passwd"):
        assert accounts.check_kiosk_token(conn, wrong) is None
    with pytest.raises(AccountError, match="no kiosk token"):
        accounts.revoke_kiosk_token(conn, 987654321)


def test_kiosk_token_checks_its_inputs(conn: Connection) -> None:
    accounts.add_user(conn, "admin.v", PASSWORD, "administrator")
    with pytest.raises(AccountError, match="no user"):
        accounts.issue_kiosk_token(conn, "screen", "nobody.here")
    with pytest.raises(AccountError, match="label"):
        accounts.issue_kiosk_token(conn, "   ", "admin.v")
    with pytest.raises(AccountError, match="time zone"):
        accounts.issue_kiosk_token(conn, "screen", "admin.v", datetime(2099, 1, 1))
    with pytest.raises(AccountError, match="past"):
        accounts.issue_kiosk_token(conn, "screen", "admin.v", datetime.now(UTC) - timedelta(minutes=1))


# --- audit ------------------------------------------------------------------------------------------


def test_audit_rows_are_written_and_read_back(conn: Connection) -> None:
    first = accounts.audit(conn, "wu.gang", "export", {"page": "cases", "rows": 12, "区": "东城区"}, "10.1.1.1")
    second = accounts.audit(conn, "wu.gang", "logout", {}, "10.1.1.1")
    assert second > first
    newest = accounts.recent_audit(conn, 2)
    assert [(r.audit_id, r.action) for r in newest] == [(second, "logout"), (first, "export")]
    exports = accounts.recent_audit(conn, 10, action="export", actor="wu.gang")
    assert len(exports) == 1 and exports[0].detail == {"page": "cases", "rows": 12, "区": "东城区"}
    assert exports[0].remote_addr == "10.1.1.1"
