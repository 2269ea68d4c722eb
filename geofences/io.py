"""Zones from and to files: GeoJSON, GeoPackage and Shapefile, through geopandas.

The only module of the package that touches files, and the only one that imports
geopandas. Every feature read goes through ``validate.parse_feature``, so a file is held to
exactly the rules of the API; bad features are all reported together, by index.

Coordinate reference systems: zones are WGS 84 lon/lat. Data in another geographic CRS
(ETRS89, NAD83, ...) is reprojected, which moves nothing by more than about a metre and is
recorded in each zone's ``repairs``. Data in a projected CRS (UTM and the like) is refused
unless the caller passes ``allow_reproject=True``: reprojecting it is safe, but its being
projected often means the file is not the one the caller thinks. A file without a CRS is
refused unless ``assume_crs`` says what it is.

Columns become properties. Properties that are objects or arrays (``schedule``,
``expected_region``) are written as JSON text where the format has no such type, and
``schedule`` is decoded from JSON text again on reading. Shapefiles hold one geometry type
per file, cut column names to 10 characters and text to 254: prefer GeoPackage.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import geopandas
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from geofences.model import Area, Circle
from geofences.validate import (
    ZoneCollectionError,
    ZoneError,
    ZoneSpec,
    parse_feature,
    to_feature,
)

__all__ = ["DRIVERS", "read_zones", "write_zones"]

# File suffix to OGR driver, for write_zones when no driver is named.
DRIVERS: Final[Mapping[str, str]] = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
}

_WGS84: Final = CRS.from_epsg(4326)


def _describe(crs: CRS) -> str:
    code = crs.to_string()
    return code if code == crs.name else f"{code} ({crs.name})"


def _to_wgs84(
    frame: geopandas.GeoDataFrame, allow_reproject: bool, assume_crs: str | None
) -> tuple[geopandas.GeoDataFrame, tuple[str, ...]]:
    """The frame in EPSG:4326, and what was done to get it there."""
    if frame.crs is None:
        if assume_crs is None:
            raise ZoneError(
                "the file declares no CRS; pass assume_crs (e.g. 'EPSG:4326') if it is known"
            )
        frame = frame.set_crs(assume_crs)
    crs = CRS.from_user_input(frame.crs)
    if crs.equals(_WGS84, ignore_axis_order=True):
        return frame, ()
    if crs.is_projected and not allow_reproject:
        raise ZoneError(
            f"the file is in a projected CRS, {_describe(crs)}; zones are WGS 84 lon/lat: "
            "pass allow_reproject=True to reproject it"
        )
    if not (crs.is_projected or crs.is_geographic):
        raise ZoneError(f"the file's CRS, {_describe(crs)}, is neither geographic nor projected")
    return frame.to_crs(_WGS84), (f"reprojected from {_describe(crs)} to EPSG:4326",)


def _plain(value: Any) -> Any:
    """A column value as plain JSON-like Python, or None for a missing one."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def _properties(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    props = {str(k): _plain(v) for k, v in record.items()}
    props = {k: v for k, v in props.items() if v is not None}
    schedule = props.get("schedule")
    if isinstance(schedule, str):
        try:
            props["schedule"] = json.loads(schedule)
        except json.JSONDecodeError as error:
            raise ZoneError(f"properties.schedule is not valid JSON ({error})", index) from None
    return props


def read_zones(
    source: str | os.PathLike[str] | bytes,
    layer: str | int | None = None,
    *,
    allow_reproject: bool = False,
    assume_crs: str | None = None,
) -> list[ZoneSpec]:
    """Read and check every zone of a GeoJSON, GeoPackage or Shapefile (a path, or the
    file's bytes; a zipped Shapefile works as bytes too).

    Raises ZoneError for a problem with the whole file (its CRS), ZoneCollectionError
    listing each bad feature by index otherwise. Reprojections are recorded in every
    zone's ``repairs``.
    """
    data: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    frame = geopandas.read_file(data, layer=layer, engine="pyogrio")
    frame, done = _to_wgs84(frame, allow_reproject, assume_crs)
    geometry_column = frame.geometry.name
    records = frame.drop(columns=geometry_column).to_dict("records")
    specs: list[ZoneSpec] = []
    errors: list[ZoneError] = []
    for i, (geometry, record) in enumerate(zip(frame.geometry, records, strict=True)):
        try:
            feature = {
                "type": "Feature",
                "geometry": None if geometry is None else shapely.geometry.mapping(geometry),
                "properties": _properties(record, i),
            }
            spec = parse_feature(feature, index=i)
        except ZoneError as error:
            errors.append(error)
            continue
        specs.append(dataclasses.replace(spec, repairs=spec.repairs + done) if done else spec)
    if errors:
        raise ZoneCollectionError(errors)
    return specs


def _column_value(value: Any) -> Any:
    # Object and array values have no column type in Shapefile or GeoPackage: JSON text.
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True)
    return value


def write_zones(
    specs: Iterable[ZoneSpec],
    path: str | os.PathLike[str],
    driver: str | None = None,
    *,
    layer: str | None = None,
) -> None:
    """Write zones to ``path`` with an OGR driver ("GeoJSON", "GPKG", "ESRI Shapefile"),
    by default the one its suffix names. Circles are written as Points with ``radius_m``,
    corridors as lines with ``width_m``, all in EPSG:4326."""
    specs = list(specs)
    if driver is None:
        suffix = Path(path).suffix.lower()
        if suffix not in DRIVERS:
            raise ValueError(f"cannot tell the format of {os.fspath(path)!r}: name a driver")
        driver = DRIVERS[suffix]
    rows: list[dict[str, Any]] = []
    geometries: list[Any] = []
    for spec in specs:
        props = to_feature(spec)["properties"]
        rows.append({k: _column_value(v) for k, v in props.items()})
        shape = spec.shape
        if isinstance(shape, Circle):
            geometries.append(shapely.Point(shape.lon, shape.lat))
        elif isinstance(shape, Area):
            geometries.append(shape.geometry)
        else:
            geometries.append(shape.line)
    if driver == "ESRI Shapefile":
        dimensions = {int(shapely.get_dimensions(g)) for g in geometries}
        if len(dimensions) > 1:
            raise ValueError(
                "a Shapefile holds a single geometry type; these zones mix points, lines and "
                "polygons: write a GeoPackage, or one Shapefile per type"
            )
    frame = geopandas.GeoDataFrame(
        pd.DataFrame.from_records(rows) if rows else None,
        geometry=geometries,
        crs=_WGS84,
    )
    options: dict[str, Any] = {}
    if driver != "ESRI Shapefile":
        # Keep a Polygon a Polygon beside MultiPolygons, so that zones read back as written.
        options["promote_to_multi"] = False
    frame.to_file(path, driver=driver, layer=layer, engine="pyogrio", **options)
