"""Seeded, reproducible scenarios that enrol what they need, play it against a
backend, and write what they expect it to alert (`device-sim scenario`)."""

from device_sim.scenarios.base import Context, Scenario, Wait
from device_sim.scenarios.library import SCENARIOS
from device_sim.scenarios.runner import Outcome, play_all, prepare_all

__all__ = ["SCENARIOS", "Context", "Outcome", "Scenario", "Wait", "play_all", "prepare_all"]
