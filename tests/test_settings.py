"""Settings: every field is documented in .env.example, and bad values fail with the variable named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from geodata.settings import PROJECT_ROOT, Settings


def _variables_of(field_name: str) -> list[str]:
    alias = Settings.model_fields[field_name].validation_alias
    return list(alias.choices) if alias is not None else []  # type: ignore[union-attr]


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?([A-Z_]+)=", (PROJECT_ROOT / ".env.example").read_text(), re.M))
    for name in Settings.model_fields:
        assert set(_variables_of(name)) & documented, f"{name} is not in .env.example"


def test_database_url_unset_means_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "")
    assert Settings(data_dir=tmp_path).embedded
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    assert not Settings(data_dir=tmp_path).embedded


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGRID_MAP_STYLE", "https://example.invalid/tiles")
    with pytest.raises(ValidationError, match="CITYGRID_MAP_STYLE"):
        Settings()
    monkeypatch.delenv("CITYGRID_MAP_STYLE")
    monkeypatch.setenv("CITYGRID_GRID_SERIAL_WIDTH", "9")
    with pytest.raises(ValidationError, match="CITYGRID_GRID_SERIAL_WIDTH"):
        Settings()


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CITYGRID_LANG=en\nCITYGRID_METRIC_CRS=4549\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.lang, settings.metric_crs) == ("en", 4549)
