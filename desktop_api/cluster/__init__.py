"""Several bridge instances on one PostgreSQL store, acting as one service."""
