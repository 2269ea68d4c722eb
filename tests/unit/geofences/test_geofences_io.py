"""geofences.io: zones through GeoJSON, GeoPackage and Shapefile files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas
import pytest
import shapely

from geofences.io import read_zones, write_zones
from geofences.model import Area, Circle, Corridor
from geofences.validate import ZoneCollectionError, ZoneError, ZoneSpec, parse_feature

SQUARE = [[71.40, 51.10], [71.45, 51.10], [71.45, 51.14], [71.40, 51.14], [71.40, 51.10]]
HOLE = [[71.42, 51.12], [71.43, 51.12], [71.43, 51.13], [71.42, 51.12]]


def zone(geometry: dict[str, Any], **properties: Any) -> ZoneSpec:
    return parse_feature({"type": "Feature", "geometry": geometry, "properties": properties})


HOME = zone(
    {"type": "Point", "coordinates": [71.4304, 51.1282]},
    kind="home",
    radius_m=50.0,
    name="flat 12",
    schedule={"from": "21:00", "to": "07:00"},
)
WARD = zone({"type": "Polygon", "coordinates": [SQUARE, HOLE]}, kind="inclusion", name="ward")
AIRPORT = zone(
    {
        "type": "MultiPolygon",
        "coordinates": [[SQUARE], [[[x + 0.1, y] for x, y in SQUARE]]],
    },
    kind="exclusion",
    name="airport",
)
ROUTE = zone(
    {"type": "LineString", "coordinates": [[71.40, 51.10], [71.50, 51.15]]},
    kind="inclusion",
    width_m=120.0,
    name="route to work",
)


def assert_same(read: list[ZoneSpec], written: list[ZoneSpec]) -> None:
    assert len(read) == len(written)
    for got, want in zip(read, written, strict=True):
        assert got.kind == want.kind
        assert got.name == want.name
        assert got.schedule == want.schedule
        assert got.repairs == ()
        if isinstance(want.shape, Circle):
            assert got.shape == want.shape
        elif isinstance(want.shape, Area):
            assert isinstance(got.shape, Area)
            assert shapely.equals(got.shape.geometry, want.shape.geometry)
        else:
            assert isinstance(got.shape, Corridor)
            assert got.shape.width_m == want.shape.width_m
            assert shapely.equals(got.shape.line, want.shape.line)


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_round_trip_of_mixed_zones(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"zones{suffix}"
    zones = [HOME, WARD, AIRPORT, ROUTE]
    write_zones(zones, path)
    read = read_zones(path)
    assert_same(read, zones)
    # Coordinates come back exactly, and so does a Polygon beside a MultiPolygon.
    assert read[1].shape == WARD.shape
    assert read[2].shape == AIRPORT.shape


def test_round_trip_through_shapefiles(tmp_path: Path) -> None:
    areas = [WARD, AIRPORT]
    write_zones(areas, tmp_path / "areas.shp")
    assert_same(read_zones(tmp_path / "areas.shp"), areas)
    write_zones([HOME], tmp_path / "homes.shp", driver="ESRI Shapefile")
    assert_same(read_zones(tmp_path / "homes.shp"), [HOME])
    write_zones([ROUTE], tmp_path / "routes.shp")
    assert_same(read_zones(tmp_path / "routes.shp"), [ROUTE])


def test_shapefile_refuses_mixed_geometry_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single geometry type"):
        write_zones([HOME, WARD], tmp_path / "mixed.shp")


def test_unknown_suffix_needs_a_driver(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name a driver"):
        write_zones([HOME], tmp_path / "zones.txt")


def test_reads_bytes(tmp_path: Path) -> None:
    path = tmp_path / "zones.gpkg"
    write_zones([HOME, WARD], path, layer="subject-7")
    assert_same(read_zones(path.read_bytes(), layer="subject-7"), [HOME, WARD])
    text = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [71.4304, 51.1282]},
                    "properties": {"kind": "home", "radius_m": 50},
                }
            ],
        }
    )
    (spec,) = read_zones(text.encode())
    assert spec.shape == Circle(71.4304, 51.1282, 50.0)


def write_frame(path: Path, crs: str | None, geometry: list[Any], **columns: list[Any]) -> None:
    frame = geopandas.GeoDataFrame(columns, geometry=geometry, crs=crs)
    frame.to_file(path, engine="pyogrio")


def test_projected_file_is_refused_unless_reprojection_is_allowed(tmp_path: Path) -> None:
    # Astana in UTM zone 42N, a 400 m square around it.
    x, y = 670_000.0, 5_667_000.0
    path = tmp_path / "utm.gpkg"
    write_frame(path, "EPSG:32642", [shapely.box(x, y, x + 400, y + 400)], kind=["exclusion"])
    with pytest.raises(ZoneError, match="projected CRS, EPSG:32642") as caught:
        read_zones(path)
    assert not isinstance(caught.value, ZoneCollectionError)
    (spec,) = read_zones(path, allow_reproject=True)
    assert spec.repairs == ("reprojected from EPSG:32642 (WGS 84 / UTM zone 42N) to EPSG:4326",)
    assert isinstance(spec.shape, Area)
    west, south, east, north = spec.shape.geometry.bounds
    assert 71.0 < west < east < 72.0
    assert 51.0 < south < north < 51.2


def test_other_geographic_crs_is_reprojected(tmp_path: Path) -> None:
    path = tmp_path / "pulkovo.gpkg"
    write_frame(path, "EPSG:4284", [shapely.Point(71.43, 51.13)], kind=["home"], radius_m=[50.0])
    (spec,) = read_zones(path)
    assert spec.repairs == ("reprojected from EPSG:4284 (Pulkovo 1942) to EPSG:4326",)
    assert isinstance(spec.shape, Circle)
    # Pulkovo 1942 and WGS 84 differ by up to a hundred metres or so here, not by degrees.
    assert spec.shape.lon == pytest.approx(71.43, abs=0.01)
    assert spec.shape.lon != 71.43


def test_file_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "bare.shp"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        write_frame(path, None, [shapely.Point(71.43, 51.13)], kind=["home"], radius_m=[50.0])
    with pytest.raises(ZoneError, match="no CRS"):
        read_zones(path)
    (spec,) = read_zones(path, assume_crs="EPSG:4326")
    assert spec.shape == Circle(71.43, 51.13, 50.0)
    assert spec.repairs == ()


def test_every_bad_feature_is_reported_by_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.geojson"
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [71.43, 51.13]},
            "properties": {"kind": "home", "radius_m": 50},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [71.43, 51.13]},
            "properties": {"kind": "prison", "radius_m": 50},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [71.43, 51.13]},
            "properties": {"kind": "home", "radius_m": -3},
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
            },
            "properties": {"kind": "exclusion"},
        },
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(ZoneCollectionError) as caught:
        read_zones(path)
    errors = caught.value.errors
    assert [e.feature_index for e in errors] == [1, 2, 3]
    assert "unknown kind" in errors[0].reason
    assert "radius_m" in errors[1].reason
    assert "self-intersecting" in errors[2].reason


def test_schedule_text_that_is_not_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "schedule.gpkg"
    write_frame(
        path,
        "EPSG:4326",
        [shapely.Point(71.43, 51.13)],
        kind=["home"],
        radius_m=[50.0],
        schedule=["nights"],
    )
    with pytest.raises(ZoneCollectionError) as caught:
        read_zones(path)
    assert caught.value.errors[0].feature_index == 0
    assert "schedule is not valid JSON" in caught.value.errors[0].reason
