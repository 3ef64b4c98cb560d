"""Dashboard rollups: small tables the hot paths read instead of scanning raw cases.

The ETL refreshes them inside each load's transaction (geodata/rollups.py), for the report days the load
touched, so a page never sees cases without their rollups or the other way round.  They hold the counts
that do not depend on the moment of reading; what does (due to close, overdue) is added at read time from
``rollup.open_case``, the small set of cases not yet closed.

  case_day_unit      district, street and community by report day: every count of geodata.kpi.CaseCounts
                     that does not depend on "as of", plus reports by channel and kind
  case_month_grid    the same per unit grid and report month (grid choropleths, "grids needing attention")
  case_day_category  per district, day and minor category (top problems, handling time by category)
  case_day_h3        per district, day and H3 resolution-8 cell (the big screen's heat)
  open_case          cases neither closed nor voided, with their deadlines (as-of counts, overdue lists)
  recurring_place    the same category at the same grid again and again over the last 90 days of data
  unit_asset         per admin unit: components, cameras, camera coverage (refreshed after asset loads)

Revision ID: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MEASURES = """
    reported                    integer NOT NULL DEFAULT 0,
    voided                      integer NOT NULL DEFAULT 0,
    registered                  integer NOT NULL DEFAULT 0,
    registered_voided           integer NOT NULL DEFAULT 0,
    self_handled                integer NOT NULL DEFAULT 0,
    dispatched                  integer NOT NULL DEFAULT 0,
    handled                     integer NOT NULL DEFAULT 0,
    handled_on_time             integer NOT NULL DEFAULT 0,
    extended                    integer NOT NULL DEFAULT 0,
    closed                      integer NOT NULL DEFAULT 0,
    closed_not_extended         integer NOT NULL DEFAULT 0,
    closed_on_time              integer NOT NULL DEFAULT 0,
    closed_on_time_not_extended integer NOT NULL DEFAULT 0,
    reworked                    integer NOT NULL DEFAULT 0,
    resolved_grid               integer NOT NULL DEFAULT 0,
    resolved_community          integer NOT NULL DEFAULT 0,
    resolved_street             integer NOT NULL DEFAULT 0,
    resolved_district           integer NOT NULL DEFAULT 0,
    resolved_city               integer NOT NULL DEFAULT 0,
    satisfaction_sum            integer NOT NULL DEFAULT 0,
    satisfaction_count          integer NOT NULL DEFAULT 0,
    handle_hours_sum            double precision NOT NULL DEFAULT 0,
    handle_hours_count          integer NOT NULL DEFAULT 0,
    from_patrol                 integer NOT NULL DEFAULT 0,
    from_citizen                integer NOT NULL DEFAULT 0,
    from_partner                integer NOT NULL DEFAULT 0,
    from_hotline                integer NOT NULL DEFAULT 0,
    from_ai_camera              integer NOT NULL DEFAULT 0,
    kind_component              integer NOT NULL DEFAULT 0,
    kind_event                  integer NOT NULL DEFAULT 0
"""

UPGRADE_SQL = f"""
CREATE SCHEMA rollup;

CREATE TABLE rollup.case_day_unit (
    level      text NOT NULL CHECK (level IN ('district', 'street', 'community')),
    unit_code  text NOT NULL,
    day        date NOT NULL,
    {MEASURES},
    PRIMARY KEY (level, unit_code, day)
);
CREATE INDEX case_day_unit_day ON rollup.case_day_unit (level, day);

CREATE TABLE rollup.case_month_grid (
    grid_code  text NOT NULL,
    month      date NOT NULL CHECK (extract(day FROM month) = 1),
    {MEASURES},
    PRIMARY KEY (grid_code, month)
);
CREATE INDEX case_month_grid_month ON rollup.case_month_grid (month);

CREATE TABLE rollup.case_day_category (
    district_code      text NOT NULL,
    day                date NOT NULL,
    kind               text NOT NULL,
    category_code      text NOT NULL,
    reported           integer NOT NULL,
    handled            integer NOT NULL,
    closed             integer NOT NULL,
    closed_on_time     integer NOT NULL,
    handle_hours_sum   double precision NOT NULL,
    handle_hours_count integer NOT NULL,
    PRIMARY KEY (district_code, day, kind, category_code)
);

CREATE TABLE rollup.case_day_h3 (
    district_code  text NOT NULL,
    day            date NOT NULL,
    h3_r8          bigint NOT NULL,
    reported       integer NOT NULL,
    closed         integer NOT NULL,
    PRIMARY KEY (district_code, day, h3_r8)
);

CREATE TABLE rollup.open_case (
    case_number      text NOT NULL,
    reported_at      timestamptz NOT NULL,
    day              date NOT NULL,
    district_code    text NOT NULL,
    street_code      text,
    community_code   text,
    grid_code        text,
    kind             text NOT NULL,
    category_code    text NOT NULL,
    source_channel   text NOT NULL,
    status           text NOT NULL,
    dispatched       boolean NOT NULL,
    handled          boolean NOT NULL,
    extended         boolean NOT NULL,
    handle_deadline  timestamptz,
    close_deadline   timestamptz,
    PRIMARY KEY (case_number, reported_at)
);
CREATE INDEX open_case_day ON rollup.open_case (day);
CREATE INDEX open_case_grid ON rollup.open_case (grid_code);

CREATE TABLE rollup.recurring_place (
    grid_code      text NOT NULL,
    kind           text NOT NULL,
    category_code  text NOT NULL,
    district_code  text NOT NULL,
    street_code    text,
    community_code text,
    cases          integer NOT NULL CHECK (cases >= 3),
    open_cases     integer NOT NULL,
    first_day      date NOT NULL,
    last_day       date NOT NULL,
    PRIMARY KEY (grid_code, kind, category_code)
);
CREATE INDEX recurring_place_cases ON rollup.recurring_place (district_code, cases DESC);

CREATE TABLE rollup.unit_asset (
    level             text NOT NULL CHECK (level IN ('district', 'street', 'community', 'grid')),
    unit_code         text NOT NULL,
    components        integer NOT NULL DEFAULT 0,
    cameras           integer NOT NULL DEFAULT 0,
    cameras_online    integer NOT NULL DEFAULT 0,
    grids             integer NOT NULL DEFAULT 0,
    area_m2           double precision NOT NULL DEFAULT 0,
    covered_m2        double precision NOT NULL DEFAULT 0,
    blind_grids       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (level, unit_code)
);

-- When each rollup was last refreshed and by which run: the big screen shows it as "data as of".
CREATE TABLE rollup.refresh_log (
    name          text PRIMARY KEY,
    refreshed_at  timestamptz NOT NULL,
    run_id        bigint,
    seconds       double precision NOT NULL
);

GRANT USAGE ON SCHEMA rollup TO citygrid_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA rollup TO citygrid_reader;
"""


def upgrade() -> None:
    """Create the rollup schema; existing stores fill it with ``citygrid rollups refresh``."""
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    """Drop the rollups (derived data: nothing is lost)."""
    op.execute("DROP SCHEMA rollup CASCADE;")
