"""The client's own errors: the connection dropped before the server answered, or the client was closed."""

from __future__ import annotations

from ..errors import NanoTypeDBError


class ConnectionLost(NanoTypeDBError):
    """The connection to the server closed before it answered; a mutation may or may not have committed."""

    code = "ConnectionLost"
    # Never sent by a server: the nearest HTTP meaning is "unavailable, try again".
    status = 503


class ClientClosed(ConnectionLost):
    """The client was closed (with close()) before the server answered."""

    code = "ClientClosed"
