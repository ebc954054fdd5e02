"""Who may see a stored object: the API key that made it, or an admin key.

Every file, batch (with its result files) and deferred completion records its owner, the
``key_id`` of the calling key (a prefix of the key's sha256, never the key). Another key gets the
same 404 as for an id that does not exist, so ids cannot be probed, and lists show only one's
own objects. A key marked ``admin=true`` in the key file sees and manages everyone's. On a server
without keys every caller is the anonymous key, so everything is shared, as before keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from grokd.server.auth import ANONYMOUS, ApiKey


@dataclass(frozen=True)
class Tenant:
    owner: str
    admin: bool = False

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner to filter lists by (``None``: every owner, for an admin)."""
        return None if self.admin else self.owner


def current_tenant(request: Request) -> Tenant:
    """The caller ``require_api_key`` identified (it runs first, on every /v1 route)."""
    key: ApiKey = getattr(request.state, "api_key", None) or ANONYMOUS
    return Tenant(key.key_id, key.admin)


# Handlers take ``tenant: TenantDep``.
TenantDep = Annotated[Tenant, Depends(current_tenant)]
