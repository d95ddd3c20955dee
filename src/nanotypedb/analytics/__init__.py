"""Usage analytics: counts and latencies of calls, and rows changed, per minute, kept in analytics.sqlite3."""
