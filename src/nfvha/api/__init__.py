"""Layer 5: the controller's HTTP API."""
