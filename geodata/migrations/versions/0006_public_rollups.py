"""Public rollups (issue #8 at city scale): the public map reads daily sums, never raw cases.

At 10 million cases a year the public map's aggregation of ``open_data.case_public`` over 90 days (about
2.5 million cases) ran into the public role's statement timeout.  These tables hold, per report day
(Asia/Shanghai), exactly what the public view would show — cases of categories not marked sensitive, not
voided — summed as layers/public_cases.py needs them:

  rollup.public_day_h3      per day, H3 resolution-8 cell, its resolution-7 cell and street (r7 is a
                            GROUP BY of it; the street lets one street's cells be drawn); street '' = none
  rollup.public_day_grid    per day and unit grid, with the grid's street (one street's grids at a time)
  rollup.public_day_street  per day and street (the streets' table)

and ``open_data.case_public_day``, the public cases of the same whole days with no more than a place's
counts by category need (the map's click on one grid or cell reads it, by the grid index).

Measures: cases, solved (closed), solved_on_time (closed by the close deadline), solved_in_grid and
solved_with_level (closed with that / any resolution level: 网格解决率), handle_hours_sum and
handle_hours_count (report → handled, over the handled cases).

The public role reads them only through ``open_data`` views that show whole days: a day is public once it
ended ``delay_hours`` ago (``open_data.public_days``: the newest such day and the oldest of the policy's
``window_days``), so the public window is "the last N whole days".  The rollup schema itself stays closed
to the public role.

They keep only the days the public may still see (``rollup.public_keep_from()``: the window's first day
and one more; older days are dropped as they leave it): a year of history loaded at once costs the public
rollups a window's worth of rows, not a year's.

Kept current by the ETL (etl/rollup_delta.py, in the load's transaction) and rebuilt for a span of days by
``rollup.refresh_public_days`` (geodata/rollups.py calls it; this migration fills the tables with it).
What is public can change after cases are stored: deferred triggers rebuild the public rollups when a
category's ``sensitive`` flag flips or the policy's window reaches further back (longer window or delay),
once per transaction as it commits, so a category newly marked sensitive leaves the public numbers with it.

Revision ID: 0006
"""

# The SQL is composed from this module's constants only (the measure list); nothing comes from input.
# ruff: noqa: S608

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MEASURES = """
    cases               integer NOT NULL DEFAULT 0,
    solved              integer NOT NULL DEFAULT 0,
    solved_on_time      integer NOT NULL DEFAULT 0,
    solved_in_grid      integer NOT NULL DEFAULT 0,
    solved_with_level   integer NOT NULL DEFAULT 0,
    handle_hours_sum    double precision NOT NULL DEFAULT 0,
    handle_hours_count  integer NOT NULL DEFAULT 0
"""
MEASURE_NAMES = ("cases, solved, solved_on_time, solved_in_grid, solved_with_level, handle_hours_sum,"
                 " handle_hours_count")

TABLES_SQL = f"""
CREATE TABLE rollup.public_day_h3 (
    day          date NOT NULL,
    h3_r8        bigint NOT NULL,
    h3_r7        bigint NOT NULL,
    street_code  text NOT NULL,
    {MEASURES},
    PRIMARY KEY (day, h3_r8, h3_r7, street_code)
);

CREATE TABLE rollup.public_day_grid (
    day          date NOT NULL,
    grid_code    text NOT NULL,
    street_code  text NOT NULL,
    {MEASURES},
    PRIMARY KEY (day, grid_code)
);
CREATE INDEX public_day_grid_street ON rollup.public_day_grid (street_code, day);

CREATE TABLE rollup.public_day_street (
    day          date NOT NULL,
    street_code  text NOT NULL,
    {MEASURES},
    PRIMARY KEY (day, street_code)
);

GRANT SELECT ON rollup.public_day_h3, rollup.public_day_grid, rollup.public_day_street TO citygrid_reader;
"""

# The rebuild of a span of report days (NULL: no bound) from raw cases: one scan, three groupings.  The
# policy is the one of open_data.case_public (not voided, category not sensitive), written out here
# because that view also cuts by time, which the rollups must not.  Only days the public may still see
# are kept (rollup.public_keep_from: the window's first day, and one more); older rows are dropped.
REFRESH_FUNCTION_SQL = f"""
CREATE FUNCTION rollup.public_keep_from() RETURNS date
LANGUAGE sql STABLE AS $$ SELECT first_day - 1 FROM open_data.public_days $$;

CREATE FUNCTION rollup.refresh_public_days(first_day date, last_day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    keep date := rollup.public_keep_from();
    from_day date := greatest(coalesce(first_day, keep), keep);
    to_day date := coalesce(last_day, 'infinity');
    lo timestamptz := from_day::timestamp AT TIME ZONE 'Asia/Shanghai';
    hi timestamptz := coalesce((last_day + 1)::timestamp AT TIME ZONE 'Asia/Shanghai', 'infinity');
BEGIN
    DELETE FROM rollup.public_day_h3 WHERE day < keep OR day BETWEEN from_day AND to_day;
    DELETE FROM rollup.public_day_grid WHERE day < keep OR day BETWEEN from_day AND to_day;
    DELETE FROM rollup.public_day_street WHERE day < keep OR day BETWEEN from_day AND to_day;
    IF from_day > to_day THEN
        RETURN;
    END IF;
    WITH c AS (
        SELECT (c.reported_at AT TIME ZONE 'Asia/Shanghai')::date AS day,
               c.h3_r8, c.h3_r7, c.grid_code, c.street_code,
               c.closed_at IS NOT NULL AS solved,
               coalesce(c.closed_on_time, false) AS on_time,
               c.closed_at IS NOT NULL AND c.resolution_level = 'grid' AS in_grid,
               c.closed_at IS NOT NULL AND c.resolution_level IS NOT NULL AS with_level,
               extract(epoch FROM c.handled_at - c.reported_at) / 3600.0 AS hours
          FROM core.case_record c
          JOIN core.category cat ON cat.kind = c.kind AND cat.code = c.category_code AND NOT cat.sensitive
         WHERE c.voided_at IS NULL
           AND c.reported_at >= lo AND c.reported_at < hi
    ), sums AS (
        SELECT day, h3_r8, h3_r7, grid_code, street_code,
               GROUPING(h3_r8, grid_code) AS set_id,
               count(*) AS cases, count(*) FILTER (WHERE solved) AS solved,
               count(*) FILTER (WHERE on_time) AS solved_on_time,
               count(*) FILTER (WHERE in_grid) AS solved_in_grid,
               count(*) FILTER (WHERE with_level) AS solved_with_level,
               coalesce(sum(hours), 0) AS handle_hours_sum, count(hours) AS handle_hours_count
          FROM c
         GROUP BY GROUPING SETS ((day, h3_r8, h3_r7, street_code), (day, grid_code, street_code),
                                 (day, street_code))
    ), cells AS (
        INSERT INTO rollup.public_day_h3 (day, h3_r8, h3_r7, street_code, {MEASURE_NAMES})
        SELECT day, h3_r8, h3_r7, coalesce(street_code, ''), {MEASURE_NAMES}
          FROM sums WHERE set_id = 1 AND h3_r8 IS NOT NULL AND h3_r7 IS NOT NULL
    ), grids AS (
        INSERT INTO rollup.public_day_grid (day, grid_code, street_code, {MEASURE_NAMES})
        SELECT day, grid_code, street_code, {MEASURE_NAMES}
          FROM sums WHERE set_id = 2 AND grid_code IS NOT NULL AND street_code IS NOT NULL
    )
    INSERT INTO rollup.public_day_street (day, street_code, {MEASURE_NAMES})
    SELECT day, street_code, {MEASURE_NAMES}
      FROM sums WHERE set_id = 3 AND street_code IS NOT NULL;
END
$$;

-- What is public changes when a category's flag flips, or when the window reaches further back (a longer
-- window, a longer delay): rebuild everything.  Deferred to the end of the transaction and done once for
-- the state it ends with (the dictionary load upserts category by category; such changes are rare, so the
-- full rebuild is too).
CREATE FUNCTION rollup.public_rollups_outdated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- never '' (what an unset setting reads)
    state text := (SELECT 'sensitive:' || coalesce(string_agg(kind || '-' || code, ',' ORDER BY kind, code), '')
                     FROM core.category WHERE sensitive)
                  || (SELECT ' keep:' || rollup.public_keep_from());
BEGIN
    IF current_setting('citygrid.public_rollups_state', true) IS DISTINCT FROM state THEN
        PERFORM rollup.refresh_public_days(NULL, NULL);
        PERFORM set_config('citygrid.public_rollups_state', state, true);
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER category_public_rollups AFTER UPDATE OF sensitive ON core.category
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.sensitive IS DISTINCT FROM NEW.sensitive)
    EXECUTE FUNCTION rollup.public_rollups_outdated();
CREATE CONSTRAINT TRIGGER policy_public_rollups AFTER UPDATE OF window_days, delay_hours ON core.public_policy
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.window_days > OLD.window_days OR NEW.delay_hours > OLD.delay_hours)
    EXECUTE FUNCTION rollup.public_rollups_outdated();

REVOKE ALL ON FUNCTION rollup.refresh_public_days(date, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION rollup.public_rollups_outdated() FROM PUBLIC;
REVOKE ALL ON FUNCTION rollup.public_keep_from() FROM PUBLIC;
"""

# Whole days only: day D is public once D + 1 (local midnight) is at least delay_hours in the past, and
# the policy's window_days newest such days are shown.  Bounds come from scalar subqueries (evaluated
# once, so the day indexes serve the range).
VIEWS_SQL = f"""
CREATE VIEW open_data.public_days AS
    SELECT last_day - (p.window_days - 1) AS first_day, last_day
      FROM core.public_policy p
     CROSS JOIN LATERAL (SELECT ((now() - make_interval(hours => p.delay_hours))
                                 AT TIME ZONE 'Asia/Shanghai')::date - 1 AS last_day) d;

CREATE VIEW open_data.case_public_h3 AS
    SELECT r.day, r.h3_r8, r.h3_r7, nullif(r.street_code, '') AS street_code, {MEASURE_NAMES}
      FROM rollup.public_day_h3 r
     WHERE r.day >= (SELECT first_day FROM open_data.public_days)
       AND r.day <= (SELECT last_day FROM open_data.public_days);

CREATE VIEW open_data.case_public_grid AS
    SELECT r.day, r.grid_code, r.street_code, {MEASURE_NAMES}
      FROM rollup.public_day_grid r
     WHERE r.day >= (SELECT first_day FROM open_data.public_days)
       AND r.day <= (SELECT last_day FROM open_data.public_days);

CREATE VIEW open_data.case_public_street AS
    SELECT r.day, r.street_code, {MEASURE_NAMES}
      FROM rollup.public_day_street r
     WHERE r.day >= (SELECT first_day FROM open_data.public_days)
       AND r.day <= (SELECT last_day FROM open_data.public_days);

-- One row per public case of those whole days, with only what a place's counts by category need (no
-- number, no time, no place finer than the grid): the breakdown of one clicked place reads it through the
-- grid index of core.case_record, over the same days as the rollups.
CREATE VIEW open_data.case_public_day AS
    SELECT (c.reported_at AT TIME ZONE 'Asia/Shanghai')::date AS day, c.kind, c.category_code,
           c.street_code, c.grid_code, c.h3_r7, c.h3_r8
      FROM core.case_record c
      JOIN core.category cat ON cat.kind = c.kind AND cat.code = c.category_code AND NOT cat.sensitive
     WHERE c.voided_at IS NULL
       AND c.reported_at >= (SELECT first_day::timestamp AT TIME ZONE 'Asia/Shanghai' FROM open_data.public_days)
       AND c.reported_at < (SELECT (last_day + 1)::timestamp AT TIME ZONE 'Asia/Shanghai'
                              FROM open_data.public_days);

GRANT SELECT ON open_data.public_days, open_data.case_public_h3, open_data.case_public_grid,
                open_data.case_public_street, open_data.case_public_day TO citygrid_reader, citygrid_public;
"""


def upgrade() -> None:
    """Create the public rollups, their views and upkeep, and fill them from the cases already stored."""
    op.execute(TABLES_SQL)
    op.execute(VIEWS_SQL)
    op.execute(REFRESH_FUNCTION_SQL)
    op.execute("SELECT rollup.refresh_public_days(NULL, NULL)")


def downgrade() -> None:
    """Back to 0005: views, trigger, functions and tables go (derived data: nothing is lost)."""
    op.execute("""
        DROP VIEW open_data.case_public_day;
        DROP VIEW open_data.case_public_street;
        DROP VIEW open_data.case_public_grid;
        DROP VIEW open_data.case_public_h3;
        DROP TRIGGER policy_public_rollups ON core.public_policy;
        DROP TRIGGER category_public_rollups ON core.category;
        DROP FUNCTION rollup.public_rollups_outdated();
        DROP FUNCTION rollup.refresh_public_days(date, date);
        DROP FUNCTION rollup.public_keep_from();
        DROP VIEW open_data.public_days;
        DROP TABLE rollup.public_day_street;
        DROP TABLE rollup.public_day_grid;
        DROP TABLE rollup.public_day_h3;
    """)
