"""Objectives and the Pareto front: the points no other point beats on every objective at once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.errors import BadConfig

DIRECTIONS = ("min", "max")


@dataclass(frozen=True)
class Objective:
    key: str                  # a figure of the points (`area_mm2`)
    direction: str            # "min" or "max"

    def __str__(self) -> str:
        return f"{self.key}:{self.direction}"


def parse_objectives(text: str, measured: set[str], field: str = "--objectives", path=None) -> list[Objective]:
    """`ttc_median_s:min,area_mm2:min` -> objectives; each must be a figure the sweep measures."""
    objectives = []
    for part in (p.strip() for p in text.split(",")):
        key, _, direction = part.partition(":")
        direction = direction or "min"
        if not key or direction not in DIRECTIONS:
            raise BadConfig(f"expected KEY:min or KEY:max, got {part!r}", path=path, field=field)
        if key not in measured:
            raise BadConfig(f"{key!r} is not measured by this sweep; expected one of {', '.join(sorted(measured))}",
                            path=path, field=field)
        if any(o.key == key for o in objectives):
            raise BadConfig(f"{key!r} is named twice", path=path, field=field)
        objectives.append(Objective(key, direction))
    if not objectives:
        raise BadConfig("expected at least one objective", path=path, field=field)
    return objectives


def pareto_front(points: list[dict], objectives: list[Objective]) -> list[int]:
    """Indexes of the points on the front, in order: a point is on it unless another point is at
    least as good on every objective and better on one. Points that failed or lack a figure of an
    objective are not ranked."""
    ranked = [i for i, p in enumerate(points)
              if not p.get("error") and all(isinstance(p.get(o.key), (int, float)) and not isinstance(p.get(o.key), bool)
                                            and np.isfinite(p[o.key]) for o in objectives)]
    if not ranked:
        return []
    # every objective as a cost: lower is better
    costs = np.array([[p[o.key] if o.direction == "min" else -p[o.key] for o in objectives]
                      for p in (points[i] for i in ranked)], dtype=np.float64)
    front = []
    for row, index in zip(costs, ranked):
        dominated = np.any(np.all(costs <= row, axis=1) & np.any(costs < row, axis=1))
        if not dominated:
            front.append(index)
    return front
