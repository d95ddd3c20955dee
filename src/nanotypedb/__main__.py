"""`python -m nanotypedb` is the `nanotypedb` command."""

from .cli.main import main

main()
