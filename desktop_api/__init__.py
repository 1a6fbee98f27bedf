"""The HTTP face of transfer-bridge: the desktop API, its change feed, health and metrics."""
