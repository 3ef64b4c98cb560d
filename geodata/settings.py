"""Settings read from the environment (and an optional ``.env``), in one place for every package.

Each field names its environment variable; ``.env.example`` at the top of the checkout lists them all
with a line on what each does.  Bounded fields fail fast with a message naming the variable, so a typo
in a deployment is caught at start-up rather than at the first page view.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout (or installed tree) CityGrid runs from; the embedded cluster and generated data live below it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every setting of CityGrid; see ``.env.example`` for the documented list."""

    model_config = SettingsConfigDict(
        env_prefix="CITYGRID_", env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- the store ----------------------------------------------------------------------------------
    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL", "CITYGRID_DATABASE_URL"),
        description="Writer URL (ETL, migrations, accounts). Unset: CityGrid runs its own embedded PostGIS.",
    )
    read_database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_READ_URL", "CITYGRID_READ_DATABASE_URL"),
        description="Read-only URL for the dashboards (a replica may serve it). Unset: the writer URL "
        "with SET ROLE citygrid_reader.",
    )
    public_database_url: str | None = Field(
        None,
        validation_alias=_env("PUBLIC_DATABASE_URL", "CITYGRID_PUBLIC_DATABASE_URL"),
        description="URL of the public role (public views only). Unset: the read URL with SET ROLE citygrid_public.",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=_env("REDIS_URL", "CITYGRID_REDIS_URL"),
        description="Shared cache for several workers. Unset: an in-process cache.",
    )
    data_dir: Path = Field(
        PROJECT_ROOT / "var",
        validation_alias=_env("CITYGRID_DATA_DIR"),
        description="Where the embedded cluster, secrets and generated demo files live.",
    )
    embedded_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        validation_alias=_env("CITYGRID_EMBEDDED_PORT"),
        description="Port of the embedded cluster; unset: a free port chosen at first start and kept.",
    )

    # --- the city -----------------------------------------------------------------------------------
    metric_crs: int = Field(
        4548,
        validation_alias=_env("CITYGRID_METRIC_CRS"),
        description="EPSG code of the metric CRS for areas and distances (4548: CGCS2000 GK CM 117E).",
    )
    grid_serial_width: int = Field(
        3,
        ge=2,
        le=4,
        validation_alias=_env("CITYGRID_GRID_SERIAL_WIDTH"),
        description="Digits of a unit grid's serial after its community code (CJ/T 213: 2, DB11: 3).",
    )
    patrol_idle_days: int = Field(
        3,
        ge=1,
        le=90,
        validation_alias=_env("CITYGRID_PATROL_IDLE_DAYS"),
        description="A unit grid no patroller entered for this many days in a row is flagged.",
    )
    sweep_tolerance_m: float = Field(
        15.0,
        ge=3,
        le=60,
        validation_alias=_env("CITYGRID_SWEEP_TOLERANCE_M"),
        description="A road piece counts as swept where a cleaner's or truck's track passed within this many metres.",
    )
    category_edition: str = Field(
        "cjt214",
        validation_alias=_env("CITYGRID_CATEGORY_EDITION"),
        description="Edition of the component/event category dictionary shipped in geodata/data.",
    )

    # --- the dashboards -----------------------------------------------------------------------------
    lang: Literal["zh-CN", "en"] = Field("zh-CN", validation_alias=_env("CITYGRID_LANG"))
    map_style: str = Field(
        "offline",
        validation_alias=_env("CITYGRID_MAP_STYLE"),
        description="'offline' draws the basemap from CityGrid's own layers; otherwise the URL template "
        "of an intranet raster tile service, e.g. http://tiles.intranet/{z}/{x}/{y}.png",
    )
    host: str = Field("127.0.0.1", validation_alias=_env("CITYGRID_HOST"))
    port: int = Field(8050, ge=1, le=65535, validation_alias=_env("CITYGRID_PORT"))
    public_port: int = Field(8051, ge=1, le=65535, validation_alias=_env("CITYGRID_PUBLIC_PORT"))
    secret_key: str | None = Field(
        None,
        validation_alias=_env("CITYGRID_SECRET_KEY"),
        description="Signs session cookies; unset: generated once and kept in the data folder.",
    )
    cookie_secure: bool = Field(
        False,
        validation_alias=_env("CITYGRID_COOKIE_SECURE"),
        description="Send session cookies over HTTPS only; set true behind a TLS proxy.",
    )
    login_max_failures: int = Field(5, ge=1, le=100, validation_alias=_env("CITYGRID_LOGIN_MAX_FAILURES"))
    login_lockout_minutes: int = Field(
        15, ge=1, le=1440, validation_alias=_env("CITYGRID_LOGIN_LOCKOUT_MINUTES")
    )
    session_hours: int = Field(12, ge=1, le=24 * 30, validation_alias=_env("CITYGRID_SESSION_HOURS"))
    bigscreen_refresh_seconds: int = Field(
        30, ge=5, le=3600, validation_alias=_env("CITYGRID_BIGSCREEN_REFRESH_SECONDS")
    )
    bigscreen_rotation_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        validation_alias=_env("CITYGRID_BIGSCREEN_ROTATION_SECONDS"),
        description="0: no rotation; otherwise rotate through districts every M seconds.",
    )
    bigscreen_rotate: Literal["districts", "themes"] = Field(
        "districts",
        validation_alias=_env("CITYGRID_BIGSCREEN_ROTATE"),
        description="What the big screen rotates through when rotation is on: districts, or the map's themes "
        "(case heat, grids needing attention).",
    )
    bigscreen_stale_minutes: int = Field(
        120,
        ge=1,
        le=7 * 24 * 60,
        validation_alias=_env("CITYGRID_BIGSCREEN_STALE_MINUTES"),
        description="The big screen says its data is stale when no load refreshed the rollups for this long.",
    )

    # --- the public side ----------------------------------------------------------------------------
    public_window_days: int = Field(90, ge=1, le=366, validation_alias=_env("CITYGRID_PUBLIC_WINDOW_DAYS"))
    public_delay_hours: int = Field(
        24, ge=0, le=24 * 30, validation_alias=_env("CITYGRID_PUBLIC_DELAY_HOURS")
    )
    public_min_cases: int = Field(
        5,
        ge=1,
        le=1000,
        validation_alias=_env("CITYGRID_PUBLIC_MIN_CASES"),
        description="k: a place with fewer cases shows no breakdown.",
    )
    public_rate_limit_per_minute: int = Field(
        120, ge=1, le=100000, validation_alias=_env("CITYGRID_PUBLIC_RATE_LIMIT_PER_MINUTE")
    )
    public_max_request_bytes: int = Field(
        16384,
        ge=1024,
        le=1048576,
        validation_alias=_env("CITYGRID_PUBLIC_MAX_REQUEST_BYTES"),
        description="Largest request body the public app reads (Dash callbacks); larger ones get 413.",
    )
    public_proxy_hops: int = Field(
        0,
        ge=0,
        le=5,
        validation_alias=_env("CITYGRID_PUBLIC_PROXY_HOPS"),
        description="Reverse proxies in front of the public app whose X-Forwarded-For is trusted (rate limit "
        "per real client); 0: none, the peer address counts.",
    )

    @field_validator("database_url", "read_database_url", "public_database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An exported-but-empty variable (``DATABASE_URL=``) means unset, not an empty URL."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("map_style")
    @classmethod
    def _check_map_style(cls, value: str) -> str:
        if value != "offline" and not ("{z}" in value and "{x}" in value and "{y}" in value):
            raise ValueError(
                "CITYGRID_MAP_STYLE must be 'offline' or a tile URL template with {z}, {x} and {y}"
            )
        return value

    @property
    def embedded(self) -> bool:
        """True when CityGrid runs its own PostGIS cluster (no DATABASE_URL given)."""
        return self.database_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
