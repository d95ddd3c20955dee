"""Typed server functions: the registry, argument validation, `ctx.db` and the runtime that calls them."""
