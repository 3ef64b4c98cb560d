"""Load on the public app: N concurrent clients for S seconds on the map's callbacks and the Open311 list.

    DATABASE_URL=postgresql://... [PUBLIC_DATABASE_URL=...] .venv/bin/python bench/public_load.py \\
        [--clients 50] [--seconds 60] [--workers 2]

Starts ``citygrid serve --public`` (gunicorn, public_app:server) on a free loopback port against the
database of the environment (default: the one CityGrid uses now), with the rate limit lifted for the run,
waits for it, then runs the clients: each loops over a mix of the page's callbacks (map in H3 r7/r8 over
7/30/90 days, the streets' table, a click on a busy cell) and ``/open311/v2/requests.json`` pages.  Any
status other than 200, or a failed connection, is an error.  Works on any loaded database (it reads which
cells and streets exist through the public API and callbacks, not from fixtures).

Prints requests per second and p50/p99 latency per kind; last line ``rps=<x> p99_ms=<y> errors=<z>``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
MAP = "..public-map.figure...public-legend.children.."
DETAIL = "public-detail.children"
STREETS = "public-streets.children"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def callback_body(dependencies: list[dict[str, Any]], output: str, values: dict[str, Any],
                  changed: str | None = None) -> dict[str, Any]:
    """The JSON Dash's renderer posts for ``output`` with these "id.prop" values."""
    spec = next(d for d in dependencies if d["output"] == output)
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    outputs = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in parts]
    return {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in spec["inputs"]],
        "state": [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in spec["state"]],
        "changedPropIds": [changed] if changed else [],
    }


def start_server(port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CITYGRID_PUBLIC_RATE_LIMIT_PER_MINUTE="100000")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--public", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the public app exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit("the public app did not answer /healthz in time")


def plan(base: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The requests the clients choose from: (kind, path, JSON body or None for GET)."""
    deps = requests.get(base + "/_dash-dependencies", timeout=30).json()
    items: list[tuple[str, str, dict[str, Any] | None]] = []
    busiest: str | None = None
    for days in (7, 30, 90):
        for unit in ("h3_r8", "h3_r7"):
            body = callback_body(deps, MAP, {"public-url.search": "", "public-days.value": days,
                                             "public-unit.value": unit, "public-street.value": None})
            items.append(("map", "/_dash-update-component", body))
            if days == 30 and unit == "h3_r8":
                answer = requests.post(base + "/_dash-update-component", json=body, timeout=120).json()
                if "response" not in answer:
                    raise SystemExit(f"the public map did not answer: {str(answer)[:300]}")
                traces = answer["response"]["public-map"]["figure"]["data"][1:]
                best = max(((c[2], loc) for tr in traces if len(tr.get("customdata", [[]])[0] or []) > 2
                            for loc, c in zip(tr["locations"], tr["customdata"], strict=True)), default=None)
                busiest = best[1] if best else None
        items.append(("streets", "/_dash-update-component",
                      callback_body(deps, STREETS, {"public-days.value": days, "public-url.search": ""})))
    if busiest:
        items.append(("detail", "/_dash-update-component", callback_body(
            deps, DETAIL, {"public-map.clickData": {"points": [{"curveNumber": 1, "location": busiest}]},
                           "public-days.value": 30, "public-unit.value": "h3_r8", "public-url.search": ""},
            changed="public-map.clickData")))
    for page in range(1, 6):
        items.append(("open311", f"/open311/v2/requests.json?page_size=200&page={page}", None))
    return items


def run(base: str, items: list[tuple[str, str, dict[str, Any] | None]], clients: int, seconds: float
        ) -> tuple[dict[str, list[float]], int, float]:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < stop:
            kind, path, body = rng.choice(items)
            started = time.perf_counter()
            try:
                response = (session.post(base + path, json=body, timeout=60) if body is not None
                            else session.get(base + path, timeout=60))
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if ok:
                    latencies[kind].append(elapsed)
                else:
                    errors += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 90)
    return latencies, errors, time.monotonic() - began


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, args.workers)
    try:
        wait_ready(base, server)
        items = plan(base)
        print(f"{len(items)} distinct requests; {args.clients} clients for {args.seconds:.0f} s against {base}")
        latencies, errors, elapsed = run(base, items, args.clients, args.seconds)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    everything = [v for values in latencies.values() for v in values]
    for kind, values in sorted(latencies.items()):
        print(f"{kind:8s} n={len(values):6d} p50={statistics.median(values):8.1f} ms"
              f" p99={percentile(values, 0.99):8.1f} ms")
    rps = len(everything) / elapsed
    print(f"total n={len(everything)} errors={errors} in {elapsed:.1f} s; p50 {percentile(everything, 0.5):.1f} ms")
    print(f"rps={rps:.1f} p99_ms={percentile(everything, 0.99):.1f} errors={errors}")


if __name__ == "__main__":
    main()
