"""Simulated bracelets that speak device protocol v1 (MQTT) and enrol themselves
through the operator API: `device-sim run` for a fleet, `device-sim upload` for one raw
upload, `device_sim.device.Bracelet` for tests. Nothing here imports the backend."""
