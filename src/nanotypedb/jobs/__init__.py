"""The durable job queue: jobs written in the mutation's own transaction, run by workers that hold a lease."""
