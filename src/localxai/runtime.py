"""The services one server process runs, built once from Settings and shared by both adapters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from localxai.accounting import Accounting
from localxai.auth import Authenticator
from localxai.deferred import DeferredCompletions
from localxai.engines.base import Engine
from localxai.service import ChatService
from localxai.store.store import Store


@dataclass(frozen=True)
class Runtime:
    service: ChatService
    deferred: DeferredCompletions
    auth: Authenticator
    store: Store

    @classmethod
    def build(
        cls,
        engines: list[Engine],
        keys: tuple[str, ...],
        store: Store,
        aliases: Iterable[tuple[str, str]] = (),
        max_n: int = 16,
        worker_id: str = "localxai",
        deferred_lease_s: float = 30.0,
    ) -> Runtime:
        service = ChatService(engines, aliases=aliases, max_n=max_n, accounting=Accounting(store))
        deferred = DeferredCompletions(service, store, worker_id, lease_s=deferred_lease_s)
        return cls(service=service, deferred=deferred, auth=Authenticator(keys, store), store=store)

    async def start(self) -> None:
        await self.deferred.start()

    async def close(self) -> None:
        await self.deferred.close()
        await self.service.close()
        self.store.close()
