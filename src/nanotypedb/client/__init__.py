"""The Python client of NanoTypeDB: calls, live queries and optimistic mutations over the WebSocket protocol.

It imports only `nanotypedb.protocol` and `nanotypedb.errors` from the server package, so it can ship on its own.
"""

from ..errors import NanoTypeDBError
from .async_client import AsyncClient
from .backoff import Backoff
from .errors import ClientClosed, ConnectionLost
from .local import Store
from .principal import Principal
from .status import Status
from .subscription import Subscription
from .sync_client import Client, SyncSubscription

__all__ = [
    "AsyncClient",
    "Backoff",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "NanoTypeDBError",
    "Principal",
    "Status",
    "Store",
    "Subscription",
    "SyncSubscription",
]
