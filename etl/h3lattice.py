"""H3 cells of many points at once: h3's own answers, with one h3 call per cell instead of one per point.

Why: h3 4.x has no array form of ``latlng_to_cell``, so a million points were a million C calls from
Python, ~1 s of one core and the largest single step of placing a million cases.  Yet a city's points
fall in a few ten thousand cells at resolution 10.

How h3 finds a cell, and where this module stops: the point goes onto the gnomonic plane of the nearest
icosahedron face (distance ``r`` and angle ``theta`` from the face centre, scaled to the resolution);
that position is rounded to the hexagon lattice by a small decision tree (which lattice parallelogram,
then which side of a few lines); the lattice point and the face then name the cell.  This module does the
first step with numpy and the decision tree up to its outcome, the *lattice key*: the face, the signs of
the position and the rounded lattice coordinates before h3 folds them.  Points with the same key have
the same lattice point, hence the same cell, so h3 is asked once per key, with one of its points.

Exactness: numpy's and h3's floating point can differ in the last bits, so a point that lies within
:data:`MARGIN` lattice units of any line of the decision tree, of an axis, or nearly as close to a
second face (or very near a face centre, where the angle is ill-conditioned) is not keyed: h3 is asked
for that point itself.  The differences are ~1e-10 units at resolution 10; the margin is 1e-6, so about
one point in 10^5 is asked directly.

The faces' centres and lattice axes are read from h3 itself (:func:`_faces`): each face-centred base
cell gives its face's centre, and a neighbour of its centre child at resolution 2 gives a lattice axis
(the hexagon lattice is the same under turns of 60 degrees, so any of the six neighbours serves).
:class:`LatticeCells` also checks a sample of every call's answers against h3 and goes back to one h3
call per point if they ever disagree: a guard against a future h3 whose geometry differs from what was
read.  ``tests/test_locate.py`` compares millions of points, and the hard ones (cell corners, face
centres, face edges).
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from functools import cache

import h3.api.basic_int as h3_int
import numpy as np
import numpy.typing as npt
import pandas as pd

#: Resolutions this module keys: the even ones (Class II, no extra lattice rotation).  Odd resolutions go
#: to h3 point by point.
KEYED_RESOLUTIONS = frozenset(range(0, 16, 2))
#: Lattice units (the distance between neighbouring cell centres) kept between a keyed point and any
#: decision of the rounding; closer points are asked of h3 directly.
MARGIN = 1e-6
#: Squared chord distance to a face centre under which a point is asked of h3 directly (~6 km).
_NEAR_CENTRE = 1e-6
#: Two faces whose squared distances differ by less than this are a tie: asked of h3 directly.
_FACE_TIE = 1e-9
_SAMPLE = 64
#: Keys remembered at most (~16 bytes each, plus the index): a city has tens of thousands of cells.
_MAX_KEYS = 4_000_000

# h3's constants (constants.h, faceijk.c): degrees to radians, the gnomonic scale of resolution 0,
# sqrt(7) per resolution step, 1/sin(60 degrees).
_DEG_TO_RAD = 0.0174532925199432957692369076848861271111
_INV_RES0_U_GNOMONIC = 2.61803398874989588842
_SQRT7 = 2.6457513110645905905016157536392604257102
_RSIN60 = 1.1547005383792515290182975610039149112953
_TWO_PI = 6.28318530717958647692528676655900576839433
_KEY_BITS = 20


@dataclass(frozen=True)
class _Faces:
    centre: np.ndarray  # (20, 3) unit vectors
    north: np.ndarray  # (20, 3) local north at each centre
    east: np.ndarray  # (20, 3) local east at each centre
    axis: np.ndarray  # (20,) azimuth of a lattice axis at each centre (radians)
    neighbours: np.ndarray  # (20, 3) the faces sharing an edge with each face (the three nearest centres)


def _vector(lat_deg: float, lng_deg: float) -> np.ndarray:
    lat, lng = lat_deg * _DEG_TO_RAD, lng_deg * _DEG_TO_RAD
    return np.array([math.cos(lng) * math.cos(lat), math.sin(lng) * math.cos(lat), math.sin(lat)])


@cache
def _faces() -> _Faces | None:
    """The 20 faces' geometry, read from h3; None if h3 does not look as expected (then no keying)."""
    # Each face holds four base cells whole: one on its centre, three around it (a turn of 120 degrees
    # apart), so the centre one is the nearest to their mean.
    inside: dict[int, list[int]] = {}
    for cell in h3_int.get_res0_cells():
        faces = h3_int.get_icosahedron_faces(cell)
        if len(faces) == 1:
            inside.setdefault(faces[0], []).append(cell)
    if sorted(inside) != list(range(20)) or any(len(cells) != 4 for cells in inside.values()):
        return None
    centres: dict[int, int] = {}
    for face, cells in inside.items():
        points = np.array([_vector(*h3_int.cell_to_latlng(cell)) for cell in cells])
        mean = points.mean(axis=0)
        distances = ((points - mean) ** 2).sum(axis=1)
        nearest = int(np.argmin(distances))
        if np.sort(distances)[1] < 4 * distances[nearest]:  # no clear centre: not the layout expected
            return None
        centres[face] = cells[nearest]
    centre, north, east, axis = (np.zeros((20, 3)), np.zeros((20, 3)), np.zeros((20, 3)), np.zeros(20))
    for face, cell in centres.items():
        c = _vector(*h3_int.cell_to_latlng(cell))
        n = np.array([0.0, 0.0, 1.0]) - c[2] * c
        n /= np.linalg.norm(n)
        e = np.cross(n, c)
        child = h3_int.cell_to_center_child(cell, 2)
        neighbour = next(iter(h3_int.grid_ring(child, 1)))
        p = _vector(*h3_int.cell_to_latlng(neighbour))
        p = p - (p @ c) * c
        centre[face], north[face], east[face], axis[face] = c, n, e, math.atan2(p @ e, p @ n)
    nearness = centre @ centre.T
    np.fill_diagonal(nearness, -np.inf)
    return _Faces(centre, north, east, axis, np.argsort(-nearness, axis=1)[:, :3])


def _pos_angle(rads: np.ndarray) -> np.ndarray:
    """Radians into [0, 2 pi), as h3 does it (one turn added or taken)."""
    out = np.where(rads < 0.0, rads + _TWO_PI, rads)
    return np.where(rads >= _TWO_PI, out - _TWO_PI, out)


def lattice_keys(lat_deg: npt.ArrayLike, lng_deg: npt.ArrayLike, res: int, faces: _Faces) -> np.ndarray:
    """Each point's lattice key at ``res`` (an even resolution), or -1 where h3 must answer for the point."""
    lat = np.asarray(lat_deg, dtype=np.float64) * _DEG_TO_RAD
    lng = np.asarray(lng_deg, dtype=np.float64) * _DEG_TO_RAD
    if len(lat) == 0:
        return np.empty(0, dtype=np.int64)
    cos_lat = np.cos(lat)
    px, py, pz = np.cos(lng) * cos_lat, np.sin(lng) * cos_lat, np.sin(lat)
    # The nearest face centre is the one of largest dot product (unit vectors).  A face is exactly the
    # region nearer its centre than its three edge neighbours' centres, so the face of the first point is
    # checked against those three only; the points it does not hold are compared with all 20.
    home = int(np.argmax(faces.centre @ np.array([px[0], py[0], pz[0]])))
    face = np.full(len(px), home, dtype=np.int64)
    unsure = np.zeros(len(px), dtype=bool)

    def dot(index: int) -> np.ndarray:
        return px * faces.centre[index, 0] + py * faces.centre[index, 1] + pz * faces.centre[index, 2]

    own = dot(home)
    rival = np.maximum.reduce([dot(int(n)) for n in faces.neighbours[home]])
    elsewhere = np.flatnonzero(~(own - rival >= _FACE_TIE))
    if len(elsewhere):
        dots = np.stack([px[elsewhere], py[elsewhere], pz[elsewhere]], axis=1) @ faces.centre.T
        nearest = np.argmax(dots, axis=1)
        rows = np.arange(len(elsewhere))
        best = dots[rows, nearest]
        dots[rows, nearest] = -np.inf
        face[elsewhere] = nearest
        unsure[elsewhere] = ~(best - dots.max(axis=1) >= _FACE_TIE)
    one = len(elsewhere) == 0

    def at(table: np.ndarray, column: int) -> np.ndarray | float:
        return float(table[home, column]) if one else table[face, column]  # one face: scalars, no gathers

    # The squared chord distance the way h3 computes it (|p - c|^2).
    cx, cy, cz = at(faces.centre, 0), at(faces.centre, 1), at(faces.centre, 2)
    sqd = (px - cx) ** 2 + (py - cy) ** 2 + (pz - cz) ** 2
    unsure |= ~(sqd >= _NEAR_CENTRE)
    # Angle from the face's lattice axis, counter-clockwise, and the gnomonic distance in lattice units.
    along = px * cx + py * cy + pz * cz
    qx, qy, qz = px - along * cx, py - along * cy, pz - along * cz
    azimuth = np.arctan2(qx * at(faces.east, 0) + qy * at(faces.east, 1) + qz * at(faces.east, 2),
                         qx * at(faces.north, 0) + qy * at(faces.north, 1) + qz * at(faces.north, 2))
    theta = _pos_angle(faces.axis[face] - _pos_angle(azimuth))
    r = np.tan(np.arccos(1.0 - sqd * 0.5)) * _INV_RES0_U_GNOMONIC
    for _ in range(res):
        r = r * _SQRT7
    x, y = r * np.cos(theta), r * np.sin(theta)
    # h3's rounding to the lattice (coordijk.h, _hex2dToCoordIJK), up to its outcome before folding.
    x2 = np.abs(y) * _RSIN60
    x1 = np.abs(x) + x2 / 2.0
    m1, m2 = np.floor(x1), np.floor(x2)
    r1, r2 = x1 - m1, x2 - m2
    low, third, two_thirds = r1 < 0.5, r1 < 1.0 / 3.0, r1 < 2.0 / 3.0
    j_up = np.where(
        low & third, r2 >= (1.0 + r1) / 2.0,
        np.where(~low & ~two_thirds, r2 >= r1 / 2.0, r2 >= 1.0 - r1))
    i_up = np.where(
        low, ~third & (1.0 - r1 <= r2) & (r2 < 2.0 * r1),
        ~two_thirds | ~((2.0 * r1 - 1.0 < r2) & (r2 < 1.0 - r1)))
    # Distance to every line the tree decides by (and to the parallelogram's sides and the axes).
    margin = np.minimum(r1, 1.0 - r1)
    for distance in (r2, 1.0 - r2, r1 - 0.5, r1 - 1.0 / 3.0, r1 - 2.0 / 3.0, r2 - (1.0 + r1) / 2.0, r2 - (1.0 - r1),
                     r2 - 2.0 * r1, r2 - (2.0 * r1 - 1.0), r2 - r1 / 2.0, x, y):
        np.minimum(margin, np.abs(distance), out=margin)
    i = m1 + i_up
    j = m2 + j_up
    unsure |= ~(margin >= MARGIN) | ~(np.maximum(i, j) < 2**_KEY_BITS)
    key = (((face * 2 + (x < 0)) * 2 + (y < 0)) << (2 * _KEY_BITS)) | (np.where(unsure, 0, i).astype(np.int64)
                                                                        << _KEY_BITS) | np.where(unsure, 0, j).astype(np.int64)
    return np.where(unsure, -1, key)


def _per_point(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    return np.fromiter(map(h3_int.latlng_to_cell, lat.tolist(), lng.tolist(), itertools.repeat(res)),
                       dtype=np.uint64, count=len(lat))


class LatticeCells:
    """Cells of many points at one resolution, remembering each lattice key's cell across calls."""

    def __init__(self, res: int) -> None:
        self.res = res
        # Known keys (a hashed index) and their cells: a load's batches mostly revisit the same cells.
        self._keys = pd.Index(np.empty(0, dtype=np.int64))
        self._cells = np.empty(0, dtype=np.uint64)
        # The faces are read from h3 on the first call, not here: dashboards import etl.locate and never locate.
        self._trusted = res in KEYED_RESOLUTIONS
        self._lock = threading.Lock()

    def __call__(self, lat: npt.ArrayLike, lng: npt.ArrayLike) -> np.ndarray:
        """h3.latlng_to_cell of every point (uint64); coordinates must be finite."""
        with self._lock:
            return self._cells_of(lat, lng)

    def _cells_of(self, lat: npt.ArrayLike, lng: npt.ArrayLike) -> np.ndarray:
        lat = np.asarray(lat, dtype=np.float64)
        lng = np.asarray(lng, dtype=np.float64)
        faces = _faces()
        if not self._trusted or faces is None or len(lat) < _SAMPLE:
            return _per_point(lat, lng, self.res)
        keys = lattice_keys(lat, lng, self.res, faces)
        out = np.empty(len(lat), dtype=np.uint64)
        direct = keys < 0
        if direct.any():
            out[direct] = _per_point(lat[direct], lng[direct], self.res)
        keyed = np.flatnonzero(~direct)
        wanted = keys[keyed]
        position = self._keys.get_indexer(wanted)
        unknown = position < 0
        if unknown.any():  # one h3 call per new key, with its first point
            if len(self._keys) + len(wanted) > _MAX_KEYS:  # bound the memory: start again
                self._keys, self._cells = pd.Index(np.empty(0, dtype=np.int64)), np.empty(0, dtype=np.uint64)
                position = np.full(len(wanted), -1, dtype=np.intp)
                unknown = position < 0
            new_keys, first = np.unique(wanted[unknown], return_index=True)
            at = keyed[unknown][first]
            self._keys = self._keys.append(pd.Index(new_keys))
            self._cells = np.concatenate([self._cells, _per_point(lat[at], lng[at], self.res)])
            position[unknown] = self._keys.get_indexer(wanted[unknown])
        out[keyed] = self._cells[position]
        # A sample asked of h3 point by point: a guard against an h3 whose geometry differs from what
        # _faces read (exactness itself rests on MARGIN: see the module's docstring).
        sample = np.linspace(0, len(lat) - 1, _SAMPLE).astype(np.intp)
        if not np.array_equal(out[sample], _per_point(lat[sample], lng[sample], self.res)):
            self._trusted = False
            return _per_point(lat, lng, self.res)
        return out
