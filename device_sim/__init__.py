"""Simulated bracelets and OwnTracks phones that speak device protocol v1 (MQTT) and
enrol themselves through the operator API: `device-sim run` for a fleet, `device-sim
scenario` for seeded scenarios that write the alerts they expect, `device-sim check` to
compare the backend with them and with every device's journal, `device-sim upload` for
one raw upload, `device_sim.device.Bracelet` for tests. Nothing here imports the
backend."""
