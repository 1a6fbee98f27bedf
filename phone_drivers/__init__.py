"""Sources of phone evidence: each owns its sockets and turns outside signals into events."""
