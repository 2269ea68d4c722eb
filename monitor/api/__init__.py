"""HTTP and websocket translation, and the composition root that wires everything."""
