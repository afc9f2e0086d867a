"""Cases as CSV or JSON for one hotline's own case system, and the time-to-removal figures.

Owns the export's columns (docs/hotlines.md, "Export") and the summary figures of the review page:
per hosting country and per responsible hotline, cases by status and hours from a case's creation
to its recorded removal. Must not touch storage beyond ``HubStore.cases``.
"""

from __future__ import annotations

import calendar
import json
import statistics
import time
from typing import Dict, List, Optional

from agent.core.errors import ConfigError
from agent.csvsafe import csv_text

COLUMNS = ("case_id", "period", "status", "url", "host", "ip", "country", "responsible", "source", "list",
           "entry", "signal", "sightings", "reports", "first_seen", "last_seen", "origins", "created_at",
           "takedown_at", "removed_at", "rejected_at", "hours_to_removal")


def _unix(t: Optional[str]) -> Optional[float]:
    return calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) if t else None


def hours_to_removal(case: dict) -> Optional[float]:
    """Hours from the case's creation at this hub to its recorded removal, or None."""
    a, b = _unix(case.get("created_at")), _unix(case.get("removed_at"))
    return round(max(0.0, b - a) / 3600.0, 2) if a is not None and b is not None else None


def row(case: dict) -> Dict[str, object]:
    """One case as an export row."""
    out = {k: case.get(k) for k in COLUMNS}
    out["case_id"] = case["id"]
    out["origins"] = ";".join(case.get("origins", []))
    out["hours_to_removal"] = hours_to_removal(case)
    return out


def cases_for(store, hotline: str, limit: int = 1000000) -> List[dict]:
    """The cases a hotline handles or has a stake in: responsible for the country, or its list's source."""
    return [c for c in store.cases(limit=limit) if hotline in (c["responsible"], c["source"])]


def export(store, hotline: str, fmt: str) -> str:
    """One hotline's cases as CSV or JSON text (oldest first)."""
    if fmt not in ("csv", "json"):
        raise ConfigError("export format %r unknown; use csv or json" % (fmt,))
    rows = [row(c) for c in reversed(cases_for(store, hotline))]
    if fmt == "json":
        return json.dumps(rows, indent=1, sort_keys=True) + "\n"
    return csv_text(COLUMNS, ([r[k] for k in COLUMNS] for r in rows))


def summary(cases: List[dict]) -> Dict[str, List[dict]]:
    """Figures per hosting country and per responsible hotline: cases by status, hours to removal."""
    out = {}
    for key in ("country", "responsible"):
        groups: Dict[str, List[dict]] = {}
        for c in cases:
            groups.setdefault(c.get(key) or "unknown", []).append(c)
        table = []
        for name, cs in sorted(groups.items()):
            hours = [h for h in (hours_to_removal(c) for c in cs) if h is not None]
            table.append({"name": name, "cases": len(cs),
                          "new": sum(c["status"] == "new" for c in cs),
                          "takedown_requested": sum(c["status"] == "takedown_requested" for c in cs),
                          "removed": sum(c["status"] == "removed" for c in cs),
                          "rejected": sum(c["status"] == "rejected" for c in cs),
                          "sightings": sum(c["sightings"] for c in cs),
                          "median_hours": round(statistics.median(hours), 1) if hours else None,
                          "max_hours": round(max(hours), 1) if hours else None})
        out[key] = table
    return out
