"""geofences.validate: GeoJSON Features in, zone specs out, or a reason why not."""

from __future__ import annotations

import copy
import json
import math
import pickle
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geofences.model import Area, Circle, Corridor
from geofences.validate import (
    ZoneCollectionError,
    ZoneError,
    ZoneSpec,
    parse_collection,
    parse_feature,
    to_feature,
)

PROPERTY = settings(database=None, deadline=None, max_examples=100)
# An explicit alphabet: arbitrary text would make hypothesis cache Unicode tables on disk.
NAME_LETTERS = "abcxyz ÄäЖжҚқ-'0123456789"

SQUARE = [[71.40, 51.10], [71.45, 51.10], [71.45, 51.14], [71.40, 51.14], [71.40, 51.10]]
HOLE = [[71.42, 51.12], [71.43, 51.12], [71.43, 51.13], [71.42, 51.12]]
BOWTIE = [[71.40, 51.10], [71.45, 51.14], [71.45, 51.10], [71.40, 51.14], [71.40, 51.10]]


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def home(lon: float = 71.4304, lat: float = 51.1282, **properties: Any) -> dict[str, Any]:
    properties.setdefault("kind", "home")
    properties.setdefault("radius_m", 500)
    return feature({"type": "Point", "coordinates": [lon, lat]}, **properties)


def polygon(rings: Any, kind: str = "exclusion", **properties: Any) -> dict[str, Any]:
    return feature({"type": "Polygon", "coordinates": rings}, kind=kind, **properties)


# ---------------------------------------------------------------- accepted


def test_home() -> None:
    spec = parse_feature(home(name="flat 12", schedule={"rrule": "FREQ=DAILY"}))
    assert spec.kind == "home"
    assert spec.shape == Circle(71.4304, 51.1282, 500.0)
    assert spec.name == "flat 12"
    assert spec.schedule == {"rrule": "FREQ=DAILY"}
    assert spec.properties["radius_m"] == 500
    assert spec.repairs == ()


def test_polygon_with_a_hole_and_multipolygon() -> None:
    spec = parse_feature(polygon([SQUARE, HOLE], kind="inclusion"))
    assert isinstance(spec.shape, Area)
    assert len(spec.shape.geometry.interiors) == 1
    shifted = [[x + 1.0, y] for x, y in SQUARE]
    multi = feature(
        {"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted]]}, kind="exclusion"
    )
    spec = parse_feature(multi)
    assert isinstance(spec.shape, Area)
    assert spec.shape.geometry.geom_type == "MultiPolygon"


def test_clockwise_rings_and_altitudes_are_accepted() -> None:
    clockwise = list(reversed(SQUARE))
    assert isinstance(parse_feature(polygon([clockwise])).shape, Area)
    with_altitude = [[x, y, 350.0] for x, y in SQUARE]
    spec = parse_feature(polygon([with_altitude]))
    assert isinstance(spec.shape, Area)
    assert not spec.shape.geometry.has_z


def test_corridor() -> None:
    route = feature(
        {"type": "LineString", "coordinates": [[71.40, 51.10], [71.50, 51.15]]},
        kind="inclusion",
        width_m=150,
    )
    spec = parse_feature(route)
    assert isinstance(spec.shape, Corridor)
    assert spec.shape.width_m == 150.0


def test_wgs84_crs_member_is_tolerated() -> None:
    f = home()
    f["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    assert parse_feature(f).kind == "home"


def test_antimeridian_split_multipolygon_is_accepted() -> None:
    east = [[179.9, -17.1], [180.0, -17.1], [180.0, -17.0], [179.9, -17.0], [179.9, -17.1]]
    west = [[-180.0, -17.1], [-179.9, -17.1], [-179.9, -17.0], [-180.0, -17.0], [-180.0, -17.1]]
    f = feature({"type": "MultiPolygon", "coordinates": [[east], [west]]}, kind="exclusion")
    assert isinstance(parse_feature(f).shape, Area)


def test_properties_are_copied() -> None:
    f = home(schedule={"days": ["mon"]})
    spec = parse_feature(f)
    f["properties"]["schedule"]["days"].append("tue")
    f["properties"]["radius_m"] = 1
    assert spec.schedule == {"days": ["mon"]}
    assert spec.properties["radius_m"] == 500
    assert spec.properties["schedule"] is not spec.schedule


# ---------------------------------------------------------------- refused


def _point(coordinates: Any, **properties: Any) -> dict[str, Any]:
    properties.setdefault("kind", "home")
    properties.setdefault("radius_m", 500)
    return feature({"type": "Point", "coordinates": coordinates}, **properties)


def _crs(name: str) -> dict[str, Any]:
    f = home()
    f["crs"] = {"type": "name", "properties": {"name": name}}
    return f


REFUSED = [
    pytest.param([home()], "not a GeoJSON Feature", id="a-list"),
    pytest.param("Feature", "not a GeoJSON Feature", id="a-string"),
    pytest.param({"type": "FeatureCollection", "features": []}, "not a GeoJSON Feature", id="fc"),
    pytest.param(home(kind="prison"), "unknown kind 'prison'", id="unknown-kind"),
    pytest.param(feature(None), "properties.kind is missing", id="no-kind"),
    pytest.param(
        {"type": "Feature", "properties": {"kind": "home"}}, "missing geometry", id="no-geometry"
    ),
    pytest.param(feature(None, kind="exclusion"), "missing geometry", id="null-geometry"),
    pytest.param({**home(), "properties": [1]}, "properties must be an object", id="bad-props"),
    pytest.param(_point([120.0, 91.0]), "latitude 91.0 is outside [-90, 90]", id="lat-range"),
    pytest.param(_point([10.0, -200.0]), "latitude -200.0 is outside", id="lat-far-out"),
    pytest.param(_point([181.0, 51.0]), "longitude 181.0 is outside [-180, 180]", id="lon-range"),
    pytest.param(_point([51.13, 171.43]), "look like [lat, lon]", id="swapped-point"),
    pytest.param(_point([math.nan, 51.0]), "not a finite number", id="nan"),
    pytest.param(_point([71.0, math.inf]), "not a finite number", id="inf"),
    pytest.param(_point([True, 51.0]), "must be a number", id="bool"),
    pytest.param(_point(["71.4", 51.0]), "must be a number", id="string"),
    pytest.param(_point([71.4]), "must be a position", id="short-position"),
    pytest.param(polygon([SQUARE[:-1]]), "is not closed", id="unclosed"),
    pytest.param(polygon([SQUARE[:2] + SQUARE[:1]]), "has 3 positions", id="three-positions"),
    pytest.param(polygon([BOWTIE]), "self-intersecting ring", id="bowtie"),
    pytest.param(
        polygon([[[71.4, 51.1], [71.5, 51.2], [71.6, 51.3], [71.4, 51.1]]]), "zero area", id="flat"
    ),
    pytest.param(polygon([]), "no exterior ring", id="no-rings"),
    pytest.param(
        polygon([[[y, x] for x, y in SQUARE]], expected_region=[60.0, 40.0, 90.0, 56.0]),
        "look like [lat, lon]",
        id="swapped-polygon-by-region",
    ),
    pytest.param(
        polygon([SQUARE], expected_region=[0.0, 0.0, 10.0, 10.0]),
        "outside properties.expected_region",
        id="outside-region",
    ),
    pytest.param(
        polygon([[[179.9, 0.0], [-179.9, 0.0], [-179.9, 0.1], [179.9, 0.1], [179.9, 0.0]]]),
        "must be split",
        id="antimeridian-unsplit",
    ),
    pytest.param(_crs("EPSG:32642"), "projected CRS", id="projected-crs"),
    pytest.param(_crs("urn:ogc:def:crs:EPSG::3857"), "projected CRS", id="web-mercator-crs"),
    pytest.param(_crs("EPSG:4284"), "only WGS 84", id="pulkovo-crs"),
    pytest.param(_crs("my-own-crs"), "unknown CRS", id="unknown-crs"),
    pytest.param(home(radius_m=None), "a home needs properties.radius_m", id="no-radius"),
    pytest.param(home(radius_m=0), "radius_m must be in (0, 100000]", id="zero-radius"),
    pytest.param(home(radius_m=-5), "radius_m must be in", id="negative-radius"),
    pytest.param(home(radius_m=150_000), "radius_m must be in", id="huge-radius"),
    pytest.param(home(radius_m="500"), "radius_m must be a number", id="text-radius"),
    pytest.param(home(radius_m=math.nan), "radius_m is not a finite number", id="nan-radius"),
    pytest.param(polygon([SQUARE], kind="home"), "a home must be a Point", id="polygon-home"),
    pytest.param(_point([71.4, 51.1], kind="exclusion"), "a Point is a home", id="point-zone"),
    pytest.param(
        feature({"type": "LineString", "coordinates": SQUARE[:2]}, kind="exclusion", width_m=5),
        "only allowed for inclusion",
        id="exclusion-corridor",
    ),
    pytest.param(
        feature({"type": "LineString", "coordinates": SQUARE[:2]}, kind="inclusion"),
        "needs properties.width_m",
        id="corridor-without-width",
    ),
    pytest.param(
        feature(
            {"type": "LineString", "coordinates": [SQUARE[0], SQUARE[0]]},
            kind="inclusion",
            width_m=5,
        ),
        "two distinct positions",
        id="corridor-one-point",
    ),
    pytest.param(
        feature({"type": "GeometryCollection", "geometries": []}, kind="inclusion"),
        "has no coordinates",
        id="geometry-collection",
    ),
    pytest.param(home(name=12), "properties.name must be a string", id="bad-name"),
    pytest.param(
        home(schedule="nights"), "properties.schedule must be an object", id="bad-schedule"
    ),
]


@pytest.mark.parametrize(("given_feature", "reason"), REFUSED)
def test_refused_with_a_reason(given_feature: Any, reason: str) -> None:
    with pytest.raises(ZoneError) as caught:
        parse_feature(given_feature)
    assert reason in caught.value.reason
    assert caught.value.feature_index is None
    assert str(caught.value) == caught.value.reason


def test_error_names_its_feature_and_survives_pickling() -> None:
    with pytest.raises(ZoneError) as caught:
        parse_feature(home(radius_m=0), index=4)
    error = caught.value
    assert error.feature_index == 4
    assert str(error).startswith("feature 4: ")
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.feature_index) == (error.reason, 4)


def test_repair_is_explicit() -> None:
    repaired = parse_feature(polygon([BOWTIE], repair=True))
    assert isinstance(repaired.shape, Area)
    assert shapely.is_valid(repaired.shape.geometry)
    assert repaired.shape.geometry.geom_type == "MultiPolygon"
    assert len(repaired.repairs) == 1
    assert "make_valid" in repaired.repairs[0]
    assert "Self-intersection" in repaired.repairs[0]
    # "repair": "yes" is not true.
    with pytest.raises(ZoneError, match="self-intersecting"):
        parse_feature(polygon([BOWTIE], repair="yes"))
    # A valid zone needs no repair and reports none.
    assert parse_feature(polygon([SQUARE], repair=True)).repairs == ()


# ---------------------------------------------------------------- collections


def test_collection_reports_every_bad_feature() -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [home(), home(kind="prison"), polygon([SQUARE]), polygon([BOWTIE]), "x"],
    }
    with pytest.raises(ZoneCollectionError) as caught:
        parse_collection(fc)
    errors = caught.value.errors
    assert [e.feature_index for e in errors] == [1, 3, 4]
    assert "unknown kind" in errors[0].reason
    assert "self-intersecting" in errors[1].reason
    assert isinstance(caught.value, ZoneError)
    assert "3 invalid feature(s)" in str(caught.value)


def test_collection_of_good_features() -> None:
    fc = {"type": "FeatureCollection", "features": [home(), polygon([SQUARE])]}
    specs = parse_collection(fc)
    assert [s.kind for s in specs] == ["home", "exclusion"]
    assert parse_collection({"type": "FeatureCollection", "features": []}) == []


@pytest.mark.parametrize(
    "fc",
    [
        home(),
        {"type": "FeatureCollection"},
        {
            "type": "FeatureCollection",
            "features": [],
            "crs": {"type": "name", "properties": {"name": "EPSG:32642"}},
        },
    ],
)
def test_not_a_usable_collection(fc: Any) -> None:
    with pytest.raises(ZoneError) as caught:
        parse_collection(fc)
    assert not isinstance(caught.value, ZoneCollectionError)


# ---------------------------------------------------------------- round trip


ROUND_TRIP = [
    pytest.param(home(name="flat 12", schedule={"from": "21:00", "to": "07:00"}), id="home"),
    pytest.param(polygon([SQUARE, HOLE], kind="inclusion", note="ward"), id="polygon-hole"),
    pytest.param(
        feature(
            {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[x + 1, y] for x, y in SQUARE]]]},
            kind="exclusion",
        ),
        id="multipolygon",
    ),
    pytest.param(
        feature(
            {"type": "LineString", "coordinates": [[71.4, 51.1], [71.5, 51.15], [71.6, 51.1]]},
            kind="inclusion",
            width_m=80.5,
        ),
        id="corridor",
    ),
    pytest.param(
        feature(
            {
                "type": "MultiLineString",
                "coordinates": [[[71.4, 51.1], [71.5, 51.15]], [[71.6, 51.1], [71.7, 51.1]]],
            },
            kind="inclusion",
            width_m=30,
        ),
        id="multi-corridor",
    ),
]


@pytest.mark.parametrize("original", ROUND_TRIP)
def test_round_trip(original: dict[str, Any]) -> None:
    spec = parse_feature(copy.deepcopy(original))
    back = to_feature(spec)
    # Through JSON text too, as the API sends it.
    again = parse_feature(json.loads(json.dumps(back)))
    assert again == spec
    assert back["geometry"] == json.loads(json.dumps(original["geometry"]))
    assert to_feature(again) == back


def test_round_trip_of_a_repaired_zone_keeps_the_repaired_shape() -> None:
    spec = parse_feature(polygon([BOWTIE], repair=True))
    again = parse_feature(to_feature(spec))
    assert again.shape == spec.shape
    assert again.repairs == ()


coordinate = st.floats(-179.0, 179.0, allow_nan=False)
latitude = st.floats(-84.0, 84.0, allow_nan=False)


@PROPERTY
@given(
    coordinate,
    latitude,
    st.floats(0.001, 100_000.0),
    st.none() | st.text(NAME_LETTERS, max_size=20),
)
def test_any_home_round_trips(lon: float, lat: float, radius: float, name: str | None) -> None:
    props: dict[str, Any] = {"radius_m": radius}
    if name is not None:
        props["name"] = name
    spec = parse_feature(home(lon, lat, **props))
    assert parse_feature(json.loads(json.dumps(to_feature(spec)))) == spec


@PROPERTY
@given(coordinate, latitude, st.floats(1e-5, 0.5), st.floats(1e-5, 0.5))
def test_any_box_round_trips(lon: float, lat: float, width: float, height: float) -> None:
    ring = [
        [lon, lat],
        [lon + width, lat],
        [lon + width, lat + height],
        [lon, lat + height],
        [lon, lat],
    ]
    spec = parse_feature(polygon([ring]))
    assert isinstance(spec, ZoneSpec)
    assert parse_feature(json.loads(json.dumps(to_feature(spec)))) == spec
