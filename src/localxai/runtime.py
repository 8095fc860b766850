"""The services one server process runs, built once from Settings and shared by both adapters."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from localxai.auth import KeyChecker
from localxai.deferred import DeferredCompletions
from localxai.engines.base import Engine
from localxai.service import ChatService


@dataclass(frozen=True)
class Runtime:
    service: ChatService
    deferred: DeferredCompletions
    keys: KeyChecker

    @classmethod
    def build(
        cls,
        engines: list[Engine],
        keys: tuple[str, ...],
        aliases: Iterable[tuple[str, str]] = (),
        max_n: int = 16,
    ) -> Runtime:
        service = ChatService(engines, aliases=aliases, max_n=max_n)
        return cls(service=service, deferred=DeferredCompletions(service), keys=KeyChecker(keys))

    async def close(self) -> None:
        await self.deferred.close()
        await self.service.close()
