"""Who the server says the client is, from its reply to `auth`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """`kind` is "user", "admin", "service" or "anonymous"; `id` the user id (a token's `sub`) or the key id."""

    kind: str = "anonymous"
    id: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Principal:
        if not isinstance(data, dict):
            return ANONYMOUS
        return cls(str(data.get("kind", "anonymous")), data.get("id"))

    @property
    def user_id(self) -> str | None:
        """The id that an optimistic insert puts in its `owner` column: a signed-in user's, else none."""
        return self.id if self.kind == "user" else None


ANONYMOUS = Principal()
