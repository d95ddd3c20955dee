"""The caller of a function: an admin, a service, a signed-in user or an anonymous client."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class PrincipalKind(enum.StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request runs as. `id` is the user id (a JWT's `sub`) or the API key id."""

    kind: PrincipalKind
    id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return self.kind is PrincipalKind.ADMIN

    @property
    def is_anonymous(self) -> bool:
        return self.kind is PrincipalKind.ANONYMOUS

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "id": self.id}


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS)


def user(user_id: str, **claims: Any) -> Principal:
    """A signed-in user, as a JWT's `sub` names them."""
    return Principal(PrincipalKind.USER, user_id, dict(claims))


def admin(key_id: str = "admin") -> Principal:
    return Principal(PrincipalKind.ADMIN, key_id)
