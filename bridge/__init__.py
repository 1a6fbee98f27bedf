"""transfer-bridge core: protocol parsing, state machines and correlation, with no I/O."""
