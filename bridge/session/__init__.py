"""Desktop sessions, pure: the transfer state machine, correlation of phone calls with sessions,
and the JSON views the API serves."""
