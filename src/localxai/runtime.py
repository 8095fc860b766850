"""The services one server process runs, built once from Settings and shared by both adapters."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import partial

from localxai.accounting import Accounting
from localxai.agent.attachment_search import AttachmentSearch
from localxai.agent.base import Executor
from localxai.agent.collections_search import CollectionsSearch
from localxai.agent.loop import Agent, AgentLimits
from localxai.agent.remote_mcp import CONNECT_TIMEOUT_S, RemoteMcp
from localxai.agent.sandbox import CodeSandbox
from localxai.agent.web_search import MAX_PAGE_BYTES, SearxngSearch
from localxai.auth import Authenticator, is_open_access
from localxai.background import BackgroundResponses
from localxai.batches import Batches
from localxai.collections import Collections
from localxai.conversations import Conversations
from localxai.deferred import DeferredCompletions
from localxai.embeddings import Embedder, Embeddings, embedders
from localxai.engines.base import Engine
from localxai.engines.registry import CachedModels, build_engines
from localxai.errors import ConfigError
from localxai.files import Files
from localxai.httpapi.batch_lines import jsonl_requests
from localxai.hub import pulled
from localxai.media.fetch import FetchPolicy
from localxai.metrics import Metrics
from localxai.sealing import Sealer
from localxai.service import ChatService, Limits, Shutdown
from localxai.settings import LOOPBACK_HOSTS, Settings, engine_tuning
from localxai.store.store import Store, sqlite_url


@dataclass(frozen=True)
class Options:
    """How a runtime is put together beyond its engines, keys and store (tests set a few)."""

    aliases: Iterable[tuple[str, str]] = ()
    limits: Limits | None = None
    worker_id: str = "localxai"
    deferred_lease_s: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    fetch_policy: FetchPolicy | None = None
    open_access: bool | None = None  # None: decided at build, from whether any key is configured or stored
    drop_server_tools: bool = False  # `--server-tools drop`
    executors: tuple[Executor, ...] = ()  # the server-side tools served (agent/)
    agent_limits: AgentLimits | None = None
    file_quota_bytes: int | None = None  # what one key may keep in the Files API; None: no limit
    embedders: tuple[Embedder, ...] = ()  # the embedding models served (embeddings.py)


@dataclass(frozen=True)
class Runtime:
    service: ChatService
    deferred: DeferredCompletions
    auth: Authenticator
    store: Store
    metrics: Metrics
    conversations: Conversations
    sealer: Sealer  # reasoning.encrypted_content: a blob only this server (or a replica) can open
    files: Files
    embeddings: Embeddings
    collections: Collections
    batches: Batches
    background: BackgroundResponses
    max_body_bytes: int = 64 * 1024 * 1024
    shutdown: Shutdown = field(default_factory=Shutdown)
    grpc_port: int = 50051  # where xai-sdk clients connect (0: no gRPC listener); the playground shows it
    cached_models: CachedModels | None = None  # the download cache's models, served on demand

    @classmethod
    def build(
        cls, engines: list[Engine], keys: tuple[str, ...], store: Store, options: Options | None = None
    ) -> Runtime:
        options = options or Options()
        aliases, limits, fetch_policy = options.aliases, options.limits, options.fetch_policy
        metrics = Metrics(engines)
        shutdown = Shutdown()
        files = Files(store, options.file_quota_bytes)
        service = ChatService(
            engines,
            aliases=aliases,
            limits=limits,
            accounting=Accounting(store),
            observer=metrics,
            fetch_policy=fetch_policy,
            shutdown=shutdown,
            files=files,
        )
        deferred = DeferredCompletions(service, store, options.worker_id, lease_s=options.deferred_lease_s)
        open_access = is_open_access(keys, store) if options.open_access is None else options.open_access
        auth = Authenticator(keys, store, open_access)
        embeddings = Embeddings(options.embedders, Accounting(store))
        collections = Collections(store, files, embeddings)
        # Collections and attachments are always searchable: the store and the embedding model are here.
        served = (*options.executors, CollectionsSearch(collections), AttachmentSearch(files, embeddings))
        agent = Agent(service, served, options.agent_limits, observer=metrics)
        conversations = Conversations(store, service, options.drop_server_tools, agent=agent)
        sealer = Sealer(store.secret("sealed-blobs"))
        batches = Batches(service, store, files, deferred, partial(jsonl_requests, sealer=sealer))
        background = BackgroundResponses(conversations, service, store, deferred)
        return cls(
            service, deferred, auth, store, metrics, conversations, sealer, files, embeddings, collections,
            batches, background, options.max_body_bytes, shutdown,
        )  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """The whole application from Settings: store, access mode, engines, aliases, limits.

        Refuses open access on a non-loopback address before any model loads."""
        store = Store(settings.database_url or sqlite_url(settings.data_dir))
        try:
            open_access = is_open_access(settings.api_keys, store)
            if open_access and settings.host not in LOOPBACK_HOSTS:
                raise ConfigError(
                    f"refusing to listen on {settings.host} without API keys: pass --api-key, set LOCALXAI_API_KEYS, "
                    "or create one with `localxai keys create`; or listen on 127.0.0.1"
                )
            # Downloads happen here, at the composition root: building the settings only reads.
            pool = None
            if settings.engine == "llamacpp":  # embedded models (llama.cpp is imported only then)
                from localxai.engines.llamacpp.ondemand import ModelPool

                pool = ModelPool(memory_budget(settings))
            engines = build_engines(pulled(settings.models, settings.offline), settings.data_dir, pool)
        except BaseException:
            store.close()
            raise
        try:
            served_embedders = embedders(settings.embedding_models, settings.threads, settings.offline)
        except BaseException:
            for engine in engines:
                engine.halt()
            store.close()
            raise
        try:
            runtime = cls.build(
                engines,
                settings.api_keys,
                store,
                Options(
                    aliases=(*settings.models.aliases, *settings.aliases),
                    limits=Limits(
                        max_n=settings.max_n,
                        max_messages=settings.max_messages,
                        max_images=settings.max_images,
                        timeout_s=settings.request_timeout_s or None,
                    ),
                    worker_id=f"{socket.gethostname()}:{settings.port}",
                    deferred_lease_s=settings.deferred_lease_s,
                    max_body_bytes=int(settings.max_body_mb * 1024 * 1024),
                    fetch_policy=FetchPolicy(allow_private=settings.allow_private_image_urls),
                    open_access=open_access,
                    drop_server_tools=settings.server_tools == "drop",
                    executors=executors(settings),
                    agent_limits=AgentLimits(max_turns=settings.agent_max_turns),
                    file_quota_bytes=int(settings.file_quota_mb * 1024 * 1024) or None,
                    embedders=tuple(served_embedders),
                ),
            )
            cached = (
                None if pool is None else CachedModels(runtime.service, pool, engine_tuning(settings), settings.offline)
            )
            return replace(runtime, grpc_port=settings.grpc_port, cached_models=cached)
        except BaseException:  # a bad alias, a duplicate id: the loaded engines must not linger
            for engine in engines:
                engine.halt()
            store.close()
            raise

    async def start(self) -> None:
        await self.conversations.agent.start()
        await self.service.open()
        if self.cached_models is not None:
            await self.cached_models.start()
        await self.deferred.start()
        await self.files.start()
        await self.collections.start()
        await self.batches.start()

    def halt(self) -> None:
        """A forced exit (second Ctrl-C): stop engine threads and children, hand back deferred work."""
        self.deferred.release_now()
        self.service.halt()

    async def close(self) -> None:
        await self.batches.close()
        await self.collections.close()
        self.embeddings.close()
        await self.files.close()
        await self.deferred.close()
        if self.cached_models is not None:
            await self.cached_models.close()
        await self.service.close()
        self.store.close()


def memory_budget(settings: Settings) -> int | None:
    """Bytes the loaded embedded models may take together: --memory-budget, by default three quarters of
    physical memory; 0: no budget."""
    from localxai.engines.llamacpp.model import physical_memory

    if settings.memory_budget_mib == 0:
        return None
    if settings.memory_budget_mib is None:
        return physical_memory() * 3 // 4
    return settings.memory_budget_mib << 20


def executors(settings: Settings) -> tuple[Executor, ...]:
    """The server-side tools the settings serve."""
    served: list[Executor] = []
    if settings.code_execution == "auto":
        served.append(CodeSandbox())
    if settings.web_search_url:
        pages = FetchPolicy(allow_private=settings.tool_allow_private, max_bytes=MAX_PAGE_BYTES, timeout_s=15.0)
        served.append(SearxngSearch(settings.web_search_url, pages))
    if settings.mcp == "on":
        served.append(RemoteMcp(FetchPolicy(allow_private=settings.tool_allow_private, timeout_s=CONNECT_TIMEOUT_S)))
    return tuple(served)
