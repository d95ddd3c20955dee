"""Who is calling: principals, API keys, JWTs and row-level security policies."""
