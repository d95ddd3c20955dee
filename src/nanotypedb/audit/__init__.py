"""The audit log's features above storage: exports (CSV, JSON), verification reports, the admin functions."""
