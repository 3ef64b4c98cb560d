"""One module per map layer (what to query for given filters, how to draw it) and their registry.

Importing the package registers every layer, so ``get_layer(name)`` finds them all.
"""

import layers.blind_cases
import layers.blind_spots
import layers.camera_sectors
import layers.camera_sites
import layers.case_hexagons
import layers.case_points
import layers.coverage_share
import layers.crews  # (the tracks' layers register themselves too)
import layers.patrol_grids
import layers.recurring_places  # (and the planners' heatmap and coverage layers)
import layers.road_sweep
import layers.unit_choropleth  # noqa: F401  (grid statistics)
from layers import admin_boundaries, attention_grids, case_heat  # noqa: F401  (register the layers)
from layers.base import get_layer, layer_names

__all__ = ["get_layer", "layer_names"]
