"""The bundled app: the seed's task manager, an ordinary NanoTypeDB app."""
