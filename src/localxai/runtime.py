"""The services one server process runs, built once from Settings and shared by both adapters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from localxai.accounting import Accounting
from localxai.auth import Authenticator
from localxai.deferred import DeferredCompletions
from localxai.engines.base import Engine
from localxai.media.fetch import FetchPolicy
from localxai.metrics import Metrics
from localxai.service import ChatService, Limits, Shutdown
from localxai.store.store import Store


@dataclass(frozen=True)
class Runtime:
    service: ChatService
    deferred: DeferredCompletions
    auth: Authenticator
    store: Store
    metrics: Metrics
    max_body_bytes: int = 64 * 1024 * 1024
    shutdown: Shutdown = field(default_factory=Shutdown)

    @classmethod
    def build(
        cls,
        engines: list[Engine],
        keys: tuple[str, ...],
        store: Store,
        aliases: Iterable[tuple[str, str]] = (),
        limits: Limits | None = None,
        worker_id: str = "localxai",
        deferred_lease_s: float = 30.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        fetch_policy: FetchPolicy | None = None,
        open_access: bool | None = None,
    ) -> Runtime:
        """`open_access` None: decided now, from whether any key is configured or stored."""
        metrics = Metrics(engines)
        shutdown = Shutdown()
        service = ChatService(
            engines,
            aliases=aliases,
            limits=limits,
            accounting=Accounting(store),
            observer=metrics,
            fetch_policy=fetch_policy,
            shutdown=shutdown,
        )
        deferred = DeferredCompletions(service, store, worker_id, lease_s=deferred_lease_s)
        if open_access is None:
            open_access = not keys and not store.has_active_keys()
        auth = Authenticator(keys, store, open_access)
        return cls(service, deferred, auth, store, metrics, max_body_bytes, shutdown)

    async def start(self) -> None:
        await self.service.open()
        await self.deferred.start()

    def halt(self) -> None:
        """A forced exit (second Ctrl-C): stop engine threads and children, hand back deferred work."""
        self.deferred.release_now()
        self.service.halt()

    async def close(self) -> None:
        await self.deferred.close()
        await self.service.close()
        self.store.close()
