"""The public role against PostGIS itself: it reads open_data views and nothing else, and writes nothing.

Checked in the catalog (every table and partition of core and private, every view of open_data) and by
trying, through the public engine the public app uses.  Also: the database's scrub and the app's scrub
agree, and both blank what identifies a person.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geodata.codes import PUBLIC_ROLE
from geodata.open311 import scrub_text
from tests.conftest import SuiteStore


def test_public_role_has_no_privilege_outside_open_data(store: SuiteStore) -> None:
    with store.writer.connect() as conn:
        relations = conn.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('core', 'private', 'rollup') AND c.relkind IN ('r', 'p', 'v', 'm', 'f')")
        ).scalars().all()
        assert "private.case_reporter" in relations and "core.case_record" in relations
        assert "rollup.public_day_h3" in relations and "rollup.public_day_grid" in relations
        granted = conn.execute(text(
            "SELECT rel, priv FROM unnest(CAST(:rels AS text[])) rel,"
            " unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) priv"
            " WHERE has_table_privilege(:role, rel, priv)"), {"rels": relations, "role": PUBLIC_ROLE}).all()
        assert granted == []
        schemas = conn.execute(text(
            "SELECT s, p FROM unnest(ARRAY['core','private','rollup','open_data','public']) s,"
            " unnest(ARRAY['USAGE','CREATE']) p"
            " WHERE has_schema_privilege(:role, s, p)"), {"role": PUBLIC_ROLE}).all()
        assert set(schemas) <= {("open_data", "USAGE"), ("public", "USAGE")}
        assert ("open_data", "CREATE") not in schemas
        writable = conn.execute(text(
            "SELECT c.relname, priv FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
            " unnest(ARRAY['INSERT','UPDATE','DELETE','TRUNCATE']) priv"
            " WHERE n.nspname = 'open_data' AND has_table_privilege(:role, c.oid, priv)"), {"role": PUBLIC_ROLE}).all()
        assert writable == []


@pytest.mark.parametrize("sql", [
    "SELECT * FROM private.case_reporter LIMIT 1",
    "SELECT geom FROM core.case_record LIMIT 1",
    "SELECT version FROM core.data_version",
    "SELECT * FROM private.app_user LIMIT 1",
    "SELECT * FROM private.rejected_row LIMIT 1",
    "SELECT * FROM rollup.public_day_h3 LIMIT 1",
    "SELECT * FROM rollup.public_day_grid LIMIT 1",
    "SELECT * FROM rollup.public_day_street LIMIT 1",
    "SELECT * FROM rollup.case_day_unit LIMIT 1",
    "SELECT rollup.refresh_public_days(NULL, NULL)",
])
def test_public_engine_cannot_read_private_or_core(store: SuiteStore, sql: str) -> None:
    with store.public.connect() as conn, pytest.raises(DBAPIError, match="permission denied"):
        conn.execute(text(sql))


@pytest.mark.parametrize("sql", [
    "UPDATE core.public_policy SET min_cases = 1",
    "INSERT INTO core.data_version (id, version) VALUES (2, 1)",
    "DELETE FROM open_data.case_public",
    "UPDATE open_data.public_policy SET min_cases = 1",
    "CREATE TABLE open_data.x (a int)",
    "CREATE TABLE public.x (a int)",
    "CREATE VIEW open_data.y AS SELECT 1",
])
def test_public_engine_cannot_write_even_read_write(store: SuiteStore, sql: str) -> None:
    with store.public.connect() as conn:
        conn.execute(text("SET TRANSACTION READ WRITE"))
        with pytest.raises(DBAPIError):
            conn.execute(text(sql))


def test_public_engine_reads_the_open_data_views(store: SuiteStore) -> None:
    with store.public.connect() as conn:
        for view in ("admin_unit", "category", "case_public", "public_policy", "data_version", "case_description",
                     "public_days", "case_public_h3", "case_public_grid", "case_public_street", "case_public_day"):
            conn.execute(text(f"SELECT * FROM open_data.{view} LIMIT 1"))  # noqa: S608 - fixed names
        assert conn.execute(text("SELECT open_data.scrub_text('13900001111')")).scalar_one() == "[电话已隐去]"


SAMPLES = {
    "张店区测试路12号门口暴露垃圾，联系人王先生13912345678": "张店区测试路*号门口暴露垃圾，联系人某先生[电话已隐去]",
    "电话 +86 139-1234-5678，身份证 37030319900101123X": "电话 [电话已隐去]，身份证 [证件号已隐去]",
    "座机0533-2876543 或 (0533)2876543": "座机[电话已隐去] 或 [电话已隐去]",
    "老证 370303900101123 在3号楼2单元201室": "老证 [证件号已隐去] 在*号楼*单元*室",
    "路灯不亮，12345热线转派": "路灯不亮，12345热线转派",
    "井盖缺失 2025年3月": "井盖缺失 2025年3月",
}


def test_database_and_app_scrub_alike(store: SuiteStore) -> None:
    with store.public.connect() as conn:
        for raw, expected in SAMPLES.items():
            in_db = conn.execute(text("SELECT open_data.scrub_text(:raw)"), {"raw": raw}).scalar_one()
            assert in_db == expected, raw
            assert scrub_text(raw) == expected, raw
