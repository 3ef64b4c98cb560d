"""A load killed in the middle leaves the store as before; the same load again gives the full result."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from geodata.settings import PROJECT_ROOT, Settings
from tests import factories
from tests.conftest import SuiteStore

ROWS = 60_000


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    factories.build_city(store.writer, tmp_path_factory.mktemp("city"), settings)
    return settings


def _write_cases(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["案件编号", "问题来源", "大类", "小类", "上报时间", "经度", "纬度"])
        for i in range(ROWS):
            writer.writerow([f"KILL{i:07d}", "群众举报", "市容环境", "暴露垃圾",
                             f"2025-04-{1 + i % 28:02d} 10:{i % 60:02d}:00",
                             f"{118.001 + (i % 97) * 0.0009:.6f}", f"{36.781 + (i % 89) * 0.0009:.6f}"])
    return path


def _count(store: SuiteStore) -> tuple[int, int]:
    with store.writer.connect() as conn:
        cases = conn.execute(text("SELECT count(*) FROM core.case_record WHERE case_number LIKE 'KILL%'")).scalar_one()
        runs = conn.execute(text(
            "SELECT count(*) FROM core.etl_run WHERE source_name = 'kill.csv' AND status = 'succeeded'")).scalar_one()
    return cases, runs


def _load_in_subprocess(store: SuiteStore, path: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": store.writer_url, "CITYGRID_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "load", "case", str(path), "--crs", "EPSG:4326"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for_copy(store: SuiteStore, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until the load is writing (a COPY or a merge running in its transaction), never by sleeping blind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with store.writer.connect() as conn:
            busy = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'citygrid-writer' AND pid <> pg_backend_pid()"
                " AND state = 'active' AND query ILIKE 'COPY%'")).scalar_one()
        if busy:
            return
        time.sleep(0.02)
    pytest.fail("the load never started writing")


def test_kill_in_the_middle_then_rerun(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    path = _write_cases(tmp_path / "kill.csv")
    before = _count(store)
    process = _load_in_subprocess(store, path, tmp_path)
    _wait_for_copy(store, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(0.5)  # the server notices the dead client and rolls its transaction back
    assert _count(store) == before, "a killed load must leave nothing behind"

    rerun = _load_in_subprocess(store, path, tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    assert _count(store) == (before[0] + ROWS, before[1] + 1)
