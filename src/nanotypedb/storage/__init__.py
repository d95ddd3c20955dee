"""The only package that speaks SQL: the engine, transactions, read sets, schema and migrations."""
