"""Geofences: zone shapes, their margins in metres, validation, indexing and files.

A pure library (no I/O but ``geofences.io``, no asyncio, no database, no MQTT). Import the
modules themselves: ``geofences.geodesy``, ``geofences.model``, ``geofences.validate``,
``geofences.index`` and ``geofences.io`` (the only one that loads geopandas, which is why
nothing is re-exported here).
"""
