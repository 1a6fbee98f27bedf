"""Several bridge instances on one PostgreSQL store, acting as one service.

- `follower`: other instances' changes (LISTEN/NOTIFY, and a catch-up read of the stored feed)
  into this instance's cache, long-polls and streams;
- `feed_order`: changes passed on strictly in cursor order, whoever wrote them (no I/O);
- `agent_lock`: one agent's writes held across a re-read and a second decision after a lost race;
- `lease`: a source that must run once (an AMI login, a dialog-info subscriber) runs on the
  instance holding its lease.

On SQLite (one instance per file) only `feed_order` and the follower's catch-up run.
See docs/architecture.md.
"""
