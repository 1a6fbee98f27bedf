"""Several bridge instances on one PostgreSQL database acting as one service (issue 12)."""
