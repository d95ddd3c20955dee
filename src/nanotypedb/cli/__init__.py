"""The `nanotypedb` command: serve (the default), keys and token."""
