"""Officer review and evidence, pure: violations in their context, exports (CSV, GeoJSON),
the court report (PDF) and the evidence bundle (ZIP with a SHA-256 manifest).

Every function here takes plain values (rows as mappings, the API's JSON shapes, rule
books) and returns values or bytes; the database, HTTP and the clock stay in the shell
(`monitor.store.reports`, `monitor.api.routes.reports`). What a function returns depends
only on its arguments, so the same record exported twice gives the same bytes.
"""

from __future__ import annotations

from monitor.reports.bundle import verify as verify_bundle

__all__ = ["verify_bundle"]
