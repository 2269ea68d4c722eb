"""The MQTT adapter: the wire contract (topics, payload decoding) and the subscriber loop."""
