"""Fan-out of committed alert events to live clients, with backpressure and resume."""
