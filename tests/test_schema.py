"""The schema: migrations both ways, the constraints that make impossible data impossible, the roles."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from geodata import codes, migrate
from tests.conftest import SuiteStore

SQUARE = "MULTIPOLYGON((({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0})))"


def _square(x0: float, y0: float, size: float) -> str:
    return SQUARE.format(x0=x0, y0=y0, x1=x0 + size, y1=y0 + size)


def _add_unit(conn: Connection, code: str, level: str, parent: str | None, wkt: str) -> None:
    parent_level = {"street": "district", "community": "street", "grid": "community"}.get(level)
    conn.execute(
        text(
            "INSERT INTO core.admin_unit (code, level, parent_code, parent_level, name, geom, label_point, area_m2)"
            " VALUES (:code, :level, :parent, :parent_level, :name, ST_GeomFromText(:wkt, 4326),"
            " ST_PointOnSurface(ST_GeomFromText(:wkt, 4326)), 1000)"
        ),
        {
            "code": code,
            "level": level,
            "parent": parent,
            "parent_level": parent_level if parent else None,
            "name": f"unit {code}",
            "wkt": wkt,
        },
    )


def _add_hierarchy(conn: Connection) -> None:
    """370311 > 370311001 > 370311001001 > 370311001001001, nested squares near Zibo."""
    _add_unit(conn, "370311", "district", None, _square(118.0, 36.8, 0.1))
    _add_unit(conn, "370311001", "street", "370311", _square(118.0, 36.8, 0.05))
    _add_unit(conn, "370311001001", "community", "370311001", _square(118.0, 36.8, 0.01))
    _add_unit(conn, "370311001001001", "grid", "370311001001", _square(118.0, 36.8, 0.001))
    conn.execute(
        text(
            "INSERT INTO core.category (kind, code, name_zh, name_en, edition) VALUES"
            " ('event', '01', '市容环境', 'City appearance', 'test'),"
            " ('event', '0102', '暴露垃圾', 'Exposed garbage', 'test')"
            " ON CONFLICT DO NOTHING"
        )
    )


def _add_case(conn: Connection, number: str, **overrides: object) -> None:
    values: dict[str, object] = {
        "number": number,
        "reported": "2025-03-01 09:00+08",
        "registered": None,
        "dispatched": None,
        "handled": None,
        "closed": None,
        "code": "0102",
        "handle_deadline": "2025-03-01 12:00+08",
        "close_deadline": "2025-03-01 15:00+08",
        "grid": "370311001001001",
    }
    values.update(overrides)
    conn.execute(text("SELECT core.ensure_case_partitions(:r, :r)"), {"r": values["reported"]})
    conn.execute(
        text(
            "INSERT INTO core.case_record (case_number, reported_at, source_channel, kind, category_code, geom,"
            " district_code, street_code, community_code, grid_code, registered_at, dispatched_at, handled_at,"
            " closed_at, handle_deadline, close_deadline)"
            " VALUES (:number, :reported, 'patrol', 'event', :code, ST_SetSRID(ST_MakePoint(118.0005, 36.8005), 4326),"
            " '370311', '370311001', '370311001001', :grid, :registered, :dispatched, :handled, :closed,"
            " :handle_deadline, :close_deadline)"
        ),
        values,
    )


def test_upgrade_and_downgrade_round_trip(store: SuiteStore) -> None:
    """A separate database goes empty -> head -> empty -> head; the suite's own stays untouched."""
    name = f"citygrid_mig_{uuid.uuid4().hex[:8]}"
    with store.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = store.writer.url.set(database=name)
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")).first():
                conn.execute(text("CREATE EXTENSION postgis"))
        assert migrate.current_revision(engine) is None
        assert migrate.upgrade(engine) == migrate.head_revision()
        with engine.connect() as conn:
            schemas = set(
                conn.execute(
                    text("SELECT nspname FROM pg_namespace WHERE nspname IN ('core', 'private', 'open_data')")
                ).scalars()
            )
        assert schemas == {"core", "private", "open_data"}
        assert migrate.downgrade(engine, "base") is None
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname IN ('core', 'private', 'open_data')")
            ).scalar()
        assert left == 0
        assert migrate.upgrade(engine) == migrate.head_revision()
    finally:
        engine.dispose()
        with store.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_geometry_is_wgs84_with_gist_indexes(conn: Connection) -> None:
    columns = conn.execute(
        text(
            "SELECT f_table_schema || '.' || f_table_name || '.' || f_geometry_column, srid"
            " FROM geometry_columns WHERE f_table_schema = 'core'"
        )
    ).all()
    assert columns, "no geometry columns registered"
    assert {srid for _, srid in columns} == {4326}
    indexed = set(
        conn.execute(
            text(
                "SELECT n.nspname || '.' || t.relname || '.' || a.attname FROM pg_index i"
                " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'gist'"
                " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
                " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)"
                " WHERE n.nspname = 'core'"
            )
        ).scalars()
    )
    main_geometries = {
        "core.admin_unit.geom",
        "core.component.geom",
        "core.camera.geom",
        "core.camera.coverage",
    }
    assert main_geometries <= indexed
    # Cases are located once, when stored, and read by their codes: their points carry no spatial index
    # (migration 0008), which would cost every load and serve no query.
    assert "core.case_record.geom" not in indexed


@pytest.mark.parametrize(
    ("constraint_table", "column", "vocabulary"),
    [
        ("core.case_record", "source_channel", codes.SOURCE_CHANNELS),
        ("core.case_record", "resolution_level", codes.RESOLUTION_LEVELS),
        ("core.case_record", "urgency", codes.URGENCIES),
        ("core.case_event", "stage", codes.CASE_STAGES),
        ("core.camera", "camera_type", codes.CAMERA_TYPES),
        ("core.component", "state", codes.COMPONENT_STATES),
        ("private.app_user", "role", codes.USER_ROLES),
        ("core.admin_unit", "level", codes.ADMIN_LEVELS),
    ],
)
def test_check_constraints_match_the_vocabularies(
    conn: Connection, constraint_table: str, column: str, vocabulary: dict[str, tuple[str, str]]
) -> None:
    definitions = conn.execute(
        text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"
            " AND contype = 'c'"
        ),
        {"t": constraint_table},
    ).scalars()
    for definition in definitions:
        if re.search(rf"\b{column}\b = ANY", definition) and "ARRAY" in definition:
            allowed = set(re.findall(r"'([a-z_]+)'::text", definition))
            assert allowed == set(vocabulary)
            return
    pytest.fail(f"no CHECK on {constraint_table}.{column}")


def test_hierarchy_codes_must_carry_their_parents_prefix(conn: Connection) -> None:
    _add_hierarchy(conn)
    with pytest.raises(IntegrityError, match="admin_unit_code_prefix"), conn.begin_nested():
        _add_unit(conn, "370311002001001", "grid", "370311001001", _square(118.0, 36.8, 0.001))


def test_hierarchy_levels_must_nest(conn: Connection) -> None:
    _add_hierarchy(conn)
    with (
        pytest.raises(IntegrityError, match="admin_unit_shape"),
        conn.begin_nested(),
    ):  # a grid hung directly under a street
        _add_unit(conn, "37031100100", "grid", "370311001", _square(118.0, 36.8, 0.001))


def test_a_grid_outside_its_community_is_refused(conn: Connection) -> None:
    _add_hierarchy(conn)
    with pytest.raises(IntegrityError, match="outside its parent"), conn.begin_nested():
        _add_unit(conn, "370311001001002", "grid", "370311001001", _square(118.02, 36.82, 0.001))


def test_a_case_closed_before_it_was_reported_is_refused(conn: Connection) -> None:
    _add_hierarchy(conn)
    with (
        pytest.raises(IntegrityError, match="case_closed_after_handled|case_handled_after_dispatch"),
        conn.begin_nested(),
    ):
        _add_case(conn, "C1", handled="2025-02-28 10:00+08", closed="2025-02-28 11:00+08")


def test_an_unknown_category_code_is_refused(conn: Connection) -> None:
    _add_hierarchy(conn)
    with pytest.raises(IntegrityError, match="foreign key"), conn.begin_nested():
        _add_case(conn, "C2", code="0999")


def test_status_and_on_time_flags_derive_from_timestamps(conn: Connection) -> None:
    _add_hierarchy(conn)
    _add_case(
        conn,
        "C3",
        registered="2025-03-01 09:10+08",
        dispatched="2025-03-01 09:20+08",
        handled="2025-03-01 12:00+08",
    )  # exactly at the deadline: on time
    _add_case(
        conn,
        "C4",
        registered="2025-03-01 09:10+08",
        dispatched="2025-03-01 09:20+08",
        handled="2025-03-01 12:00:01+08",
        closed="2025-03-01 16:00+08",
    )
    _add_case(conn, "C5")
    rows = dict(
        (number, (status, handled_on_time, closed_on_time))
        for number, status, handled_on_time, closed_on_time in conn.execute(
            text(
                "SELECT case_number, status, handled_on_time, closed_on_time FROM core.case_record"
                " WHERE case_number IN ('C3', 'C4', 'C5')"
            )
        )
    )
    assert rows == {
        "C3": ("handled", True, None),
        "C4": ("closed", False, False),
        "C5": ("reported", None, None),
    }


def test_monthly_partitions_are_made_on_demand(conn: Connection) -> None:
    made = conn.execute(text("SELECT core.ensure_case_partitions('2024-01-15', '2024-03-02')")).scalar_one()
    again = conn.execute(text("SELECT core.ensure_case_partitions('2024-01-15', '2024-03-02')")).scalar_one()
    assert (made, again) == (3, 0)
    bounds = conn.execute(
        text(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = 'case_record_202402'"
        )
    ).scalar_one()
    assert "2024-02-01 00:00:00+08" in bounds and "2024-03-01 00:00:00+08" in bounds


def _reader_cannot(store_engine_conn: Connection, sql: str) -> None:
    with pytest.raises((ProgrammingError, DBAPIError)), store_engine_conn.begin():
        store_engine_conn.execute(text(sql))


def test_reader_reads_core_but_cannot_write_or_read_personal_data(store: SuiteStore) -> None:
    with store.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM core.admin_unit")).scalar_one() >= 0
        assert conn.execute(text("SELECT count(*) FROM open_data.case_public")).scalar_one() >= 0
    for sql in (
        "SELECT * FROM private.case_reporter",
        "SELECT * FROM private.app_user",
        "SELECT * FROM private.rejected_row",
        "INSERT INTO core.work_calendar (day, is_workday) VALUES ('2030-01-01', false)",
        "UPDATE core.data_version SET version = version + 1",
        "DELETE FROM core.admin_unit",
        "CREATE TABLE core.intruder (x int)",
    ):
        with store.reader.connect() as conn:
            _reader_cannot(conn, sql)


def test_reader_cannot_escape_read_only_by_resetting(store: SuiteStore) -> None:
    """Turning the session back to read-write is not enough: the role itself has no write grant."""
    with store.reader.connect() as conn, pytest.raises((ProgrammingError, DBAPIError)), conn.begin():
        conn.execute(text("SET TRANSACTION READ WRITE"))
        conn.execute(text("INSERT INTO core.work_calendar (day, is_workday) VALUES ('2030-01-02', false)"))


def test_public_role_reads_only_public_views(store: SuiteStore) -> None:
    with store.public.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM open_data.admin_unit")).scalar_one() >= 0
    for sql in (
        "SELECT count(*) FROM core.case_record",
        "SELECT count(*) FROM core.admin_unit",
        "SELECT * FROM private.case_reporter",
        "INSERT INTO core.work_calendar (day, is_workday) VALUES ('2030-01-03', false)",
    ):
        with store.public.connect() as conn:
            _reader_cannot(conn, sql)


def test_public_case_view_has_no_personal_or_exact_location_columns(conn: Connection) -> None:
    columns = set(
        conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'open_data'"
                " AND table_name = 'case_public'"
            )
        ).scalars()
    )
    assert columns, "view missing"
    assert not columns & {
        "reporter_name",
        "reporter_phone",
        "reporter_id_number",
        "address_text",
        "description",
        "h3_r9",
        "h3_r10",
    }


def test_public_case_view_delays_and_hides_sensitive_categories(conn: Connection) -> None:
    _add_hierarchy(conn)
    conn.execute(
        text(
            "INSERT INTO core.category (kind, code, name_zh, name_en, edition, sensitive) VALUES"
            " ('event', '06', '扩展事件', 'Extended events', 'test', false),"
            " ('event', '0601', '关爱对象求助', 'Help for people under care', 'test', true)"
            " ON CONFLICT (kind, code) DO UPDATE SET sensitive = EXCLUDED.sensitive"
        )
    )
    now = conn.execute(text("SELECT now()")).scalar_one()
    recent = (now.replace(microsecond=0)).isoformat()
    old = conn.execute(text("SELECT now() - interval '3 days'")).scalar_one().isoformat()
    for number, reported, code in (("P1", old, "0102"), ("P2", recent, "0102"), ("P3", old, "0601")):
        _add_case(conn, number, reported=reported, code=code, handle_deadline=None, close_deadline=None)
    visible = set(
        conn.execute(
            text("SELECT case_number FROM open_data.case_public WHERE case_number IN ('P1', 'P2', 'P3')")
        ).scalars()
    )
    assert visible == {"P1"}
    point = conn.execute(
        text(
            "SELECT ST_AsText(p.geom) = ST_AsText(g.label_point) FROM open_data.case_public p"
            " JOIN core.admin_unit g ON g.code = p.grid_code WHERE p.case_number = 'P1'"
        )
    ).scalar_one()
    assert point, "the public location must be the grid's representative point"
