"""The states of a client's connection, as `on_status` callbacks receive them."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    CONNECTING = "connecting"  # the first connection is being made
    OPEN = "open"  # connected, signed in, subscriptions sent
    RECONNECTING = "reconnecting"  # the connection dropped; trying again with backoff
    CLOSED = "closed"  # closed by the application, or dropped with reconnect off
