"""Patrol and sanitation tracks and roads (issue #9): raw GPS fixes, daily lines and coverage rollups.

A district's fleet sends millions of fixes a day, so pages never read the raw fixes: the ETL (etl/tracks.py)
turns each load into per-device daily lines and per-grid / per-road / per-facility rollups in the same
transaction.  Who carries a device is an identity and lives in ``private`` (never granted to a read role);
``core`` knows devices by their key and role only.  No track table is granted to the public role.

  road               road segments (line layer loaded by etl/roads.py), with length and admin units
  device             one row per GPS device: its role and where and when it was last seen
  private.worker     who carries a device (person id, name): identities only here
  track_fix          raw fixes, partitioned by day (Asia/Shanghai), no index: read by day only
  track_day          per device and day: the line, length, first/last fix, fix count
  track_grid_visit   per device, day and unit grid: visits and minutes (patrollers)
  grid_patrol_day    per unit grid and day: visits, minutes, devices (the patrol coverage page)
  road_sweep_day     per road and day: the ~20 m pieces swept by cleaners and trucks, and their share
  facility_visit     trucks' stops at transfer stations and public toilets (components 0312, 0301)
  case_track_check   per case: was a patroller at the place when it was reported; minutes from dispatch
                     to the first crew fix near it

Revision ID: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
CREATE TABLE core.road (
    road_id         text PRIMARY KEY CHECK (road_id ~ '^[0-9A-Za-z_.:-]+$' AND length(road_id) <= 64),
    name            text,
    road_class      text NOT NULL DEFAULT 'other'
                        CHECK (road_class IN ('trunk', 'primary', 'secondary', 'branch', 'alley', 'other')),
    geom            geometry(MultiLineString, 4326) NOT NULL CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom)),
    length_m        double precision NOT NULL CHECK (length_m > 0),
    district_code   text NOT NULL CHECK (district_code ~ '^[0-9]+$' AND length(district_code) = 6),
    street_code     text CHECK (left(street_code, 6) = district_code),
    community_code  text CHECK (left(community_code, 9) = street_code),
    source_run_id   bigint REFERENCES core.etl_run (run_id) ON DELETE SET NULL
);
CREATE INDEX road_geom ON core.road USING gist (geom);
CREATE INDEX road_street ON core.road (street_code);

CREATE TABLE core.device (
    device_id       text PRIMARY KEY CHECK (device_id ~ '^[0-9A-Za-z_.:-]+$' AND length(device_id) <= 64),
    role            text NOT NULL CHECK (role IN ('patroller', 'cleaner', 'truck')),
    first_seen_at   timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    last_geom       geometry(Point, 4326) NOT NULL,
    last_grid_code  text,
    last_street_code text,
    source_run_id   bigint REFERENCES core.etl_run (run_id) ON DELETE SET NULL,
    CONSTRAINT device_seen_order CHECK (last_seen_at >= first_seen_at)
);
CREATE INDEX device_last_geom ON core.device USING gist (last_geom);

-- Who carries a device: identities only here, in the schema no read role may enter.
CREATE TABLE private.worker (
    device_id       text PRIMARY KEY REFERENCES core.device (device_id) ON DELETE CASCADE,
    person_id       text,
    name            text,
    team            text
);

-- Raw fixes by local day.  No index and no key: a day of a district's fleet is millions of rows, read
-- only by day (partition pruning) when the ETL rebuilds that day's rollups.  The ETL rejects duplicate
-- timestamps of a device and stores a fix once (a re-run stores nothing new).
CREATE TABLE core.track_fix (
    device_id       text COLLATE "C" NOT NULL,
    fix_time        timestamptz NOT NULL,
    geom            geometry(Point, 4326) NOT NULL,
    speed_kmh       smallint CHECK (speed_kmh BETWEEN 0 AND 400),
    source_run_id   bigint
) PARTITION BY RANGE (fix_time);

CREATE TABLE core.track_day (
    device_id       text NOT NULL REFERENCES core.device (device_id) ON DELETE CASCADE,
    day             date NOT NULL,
    role            text NOT NULL CHECK (role IN ('patroller', 'cleaner', 'truck')),
    geom            geometry(LineString, 4326),
    length_m        double precision NOT NULL CHECK (length_m >= 0),
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    fix_count       integer NOT NULL CHECK (fix_count > 0),
    source_run_id   bigint,
    PRIMARY KEY (day, device_id),
    CONSTRAINT track_day_order CHECK (last_at >= first_at)
);
CREATE INDEX track_day_geom ON core.track_day USING gist (geom);

CREATE TABLE core.track_grid_visit (
    day             date NOT NULL,
    grid_code       text NOT NULL REFERENCES core.admin_unit (code) ON DELETE CASCADE,
    device_id       text NOT NULL REFERENCES core.device (device_id) ON DELETE CASCADE,
    visits          integer NOT NULL CHECK (visits > 0),
    minutes         double precision NOT NULL CHECK (minutes >= 0),
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    PRIMARY KEY (day, grid_code, device_id)
);

CREATE TABLE core.grid_patrol_day (
    day             date NOT NULL,
    grid_code       text NOT NULL REFERENCES core.admin_unit (code) ON DELETE CASCADE,
    visits          integer NOT NULL CHECK (visits > 0),
    minutes         double precision NOT NULL CHECK (minutes >= 0),
    devices         integer NOT NULL CHECK (devices > 0),
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    PRIMARY KEY (day, grid_code)
);
CREATE INDEX grid_patrol_day_grid ON core.grid_patrol_day (grid_code, day);

CREATE TABLE core.road_sweep_day (
    day             date NOT NULL,
    road_id         text NOT NULL REFERENCES core.road (road_id) ON DELETE CASCADE,
    pieces          integer NOT NULL CHECK (pieces > 0),
    swept_pieces    integer[] NOT NULL,
    swept_share     double precision NOT NULL CHECK (swept_share BETWEEN 0 AND 1),
    swept_by        text[] NOT NULL CHECK (cardinality(swept_by) > 0),
    PRIMARY KEY (day, road_id),
    CONSTRAINT road_sweep_share CHECK (swept_share = cardinality(swept_pieces)::double precision / pieces)
);

CREATE TABLE core.facility_visit (
    device_id       text NOT NULL REFERENCES core.device (device_id) ON DELETE CASCADE,
    arrived_at      timestamptz NOT NULL,
    left_at         timestamptz NOT NULL,
    component_code  text NOT NULL REFERENCES core.component (code) ON DELETE CASCADE,
    facility_kind   text NOT NULL CHECK (facility_kind IN ('transfer_station', 'public_toilet')),
    day             date NOT NULL,
    minutes         double precision NOT NULL CHECK (minutes >= 0),
    PRIMARY KEY (device_id, arrived_at),
    CONSTRAINT facility_visit_order CHECK (left_at >= arrived_at)
);
CREATE INDEX facility_visit_day ON core.facility_visit (day, component_code);

-- What the tracks say about cases of the days loaded (no foreign key into the partitioned case table,
-- as for the reporters; the ETL writes these in the load's transaction from cases it read).
CREATE TABLE core.case_track_check (
    case_number         text NOT NULL,
    case_reported_at    timestamptz NOT NULL,
    source_channel      text NOT NULL,
    patroller_present   boolean,
    dispatched_at       timestamptz,
    first_crew_fix_at   timestamptz,
    crew_device_id      text,
    arrival_minutes     double precision CHECK (arrival_minutes >= 0),
    PRIMARY KEY (case_number, case_reported_at)
);

-- The public role reads views only and gets none on tracks; the reader reads core (grants by default
-- privileges of 0001) but never private.worker.
REVOKE ALL ON core.road, core.device, core.track_fix, core.track_day, core.track_grid_visit,
    core.grid_patrol_day, core.road_sweep_day, core.facility_visit, core.case_track_check FROM citygrid_public;
GRANT SELECT ON core.road, core.device, core.track_fix, core.track_day, core.track_grid_visit,
    core.grid_patrol_day, core.road_sweep_day, core.facility_visit, core.case_track_check TO citygrid_reader;
"""

DOWNGRADE_SQL = """
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'core.track_fix'::regclass LOOP
        EXECUTE format('DROP TABLE core.%I', part.relname);
    END LOOP;
END $$;
DROP TABLE core.case_track_check;
DROP TABLE core.facility_visit;
DROP TABLE core.road_sweep_day;
DROP TABLE core.grid_patrol_day;
DROP TABLE core.track_grid_visit;
DROP TABLE core.track_day;
DROP TABLE core.track_fix;
DROP TABLE private.worker;
DROP TABLE core.device;
DROP TABLE core.road;
"""


def upgrade() -> None:
    """Add roads, devices, workers, fixes, daily tracks and the coverage rollups."""
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    """Drop them (and every day partition of the fixes)."""
    op.execute(DOWNGRADE_SQL)
