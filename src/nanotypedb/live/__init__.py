"""Live queries: subscriptions share re-runs of their query, and each connection gets consistent transitions."""
