"""Deferred completions: start now, fetch the result later, exactly once, within 24 hours.

Submission admits and checks the request exactly like a live one (validation, access, rate limits,
prompt length, grammar) and stores it. A worker in every server process claims stored requests,
runs them through the same ChatService and stores the result, so pending work survives a restart
and results survive a crash. Several processes can share one database: a claim is a lease that the
worker renews while it runs. A request whose process died while running it MAX_ATTEMPTS times is
failed rather than run again, and one that finds the engine at capacity waits in the store.

The same worker runs batch requests (batches.py), rows of the same table, after deferred completions and
at background priority: at most `batch_concurrency` at once, handed to the engine as background work
that yields to interactive requests (a preempted one is started again). A request whose batch was
cancelled is dropped when its lease is renewed (at once when the cancel was made in this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from localxai import codec
from localxai import errors as e
from localxai.auth import ApiKey
from localxai.chat import ChatRequest, Completion
from localxai.ids import is_id, new_id
from localxai.service import ChatService, collect
from localxai.store.store import Store

log = logging.getLogger(__name__)

RESULT_TTL_S = 24 * 3600
MAX_ATTEMPTS = 3
CAPACITY_BACKOFF_S = 1.0
_BY_STATUS: dict[str, type[e.LocalXAIError]] = {
    "ABANDONED": e.Abandoned,
    e.Status.INVALID_ARGUMENT.name: e.InvalidArgument,
    e.Status.PERMISSION_DENIED.name: e.PermissionDenied,
    e.Status.NOT_FOUND.name: e.NotFound,
    e.Status.RESOURCE_EXHAUSTED.name: e.ResourceExhausted,
    e.Status.UNAVAILABLE.name: e.Unavailable,
}


class DeferredCompletions:
    def __init__(
        self,
        service: ChatService,
        store: Store,
        worker_id: str,
        lease_s: float = 30.0,
        concurrency: int = 4,
        ttl_s: float = RESULT_TTL_S,
        batch_concurrency: int = 16,
    ) -> None:
        self._service = service
        self._store = store
        self._worker_id = worker_id
        self._lease_s = lease_s
        self._concurrency = concurrency
        self._ttl_s = ttl_s
        self._batch_concurrency = batch_concurrency
        self._wake = asyncio.Event()
        self._recheck = False  # a batch was cancelled here: renew (and so drop) claims now
        self._running: dict[str, asyncio.Task[None]] = {}
        self._batch: set[str] = set()  # the running requests that are a batch's
        self._loop_task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._paused_until = 0.0  # the engine was at capacity: claim nothing before this
        self._runners: dict[str, Callable[[str, str], Awaitable[None]]] = {}

    def serve(self, endpoint: str, runner: Callable[[str, str], Awaitable[None]]) -> None:
        """Queue rows of `endpoint` outside batches (background responses) are run by `runner(id, payload)`,
        which settles them itself; the worker claims, leases and drops them (a cancelled one) as its own."""
        self._runners[endpoint] = runner

    async def start(self) -> None:
        """Re-queue what this server's previous run left running, then start the worker (in that
        order: the worker must not claim work of the previous run that is about to be released)."""
        async with self._starting:
            if self._loop_task is not None:
                return
            requeued = await asyncio.to_thread(self._store.release_claims, self._worker_id)
            if requeued:
                log.info("re-queued %d deferred completions left running by this server's previous run", requeued)
            self._loop_task = asyncio.create_task(self._work(), name="deferred-worker")

    async def close(self) -> None:
        """Stop working; requests still running go back to the queue for the next run."""
        tasks = [t for t in (self._loop_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._store.release_claims, self._worker_id, True)

    def release_now(self) -> None:
        """From a signal handler, before a forced exit: running requests go back to the queue
        without counting as a crashed attempt (blocking, best effort)."""
        try:
            self._store.release_claims(self._worker_id, True)
        except e.LocalXAIError:
            log.warning("could not release the deferred requests in flight; they are retried after their lease")

    def wake(self) -> None:
        """New work is in the store."""
        self._wake.set()

    def recheck(self) -> None:
        """Some running requests may have been cancelled: check the claims now."""
        self._recheck = True
        self._wake.set()

    async def submit(self, request: ChatRequest, caller: ApiKey) -> str:
        """Admit and check `request` (raises like a live request) and queue it; returns the request id."""
        admission = await self._service.admit(request, caller)
        await self._service.check(admission)
        request_id = new_id()
        # What was admitted: attached documents are text by now (the file may go before the request runs).
        payload = codec.dumps(admission.request)
        await asyncio.to_thread(self._store.create_deferred, request_id, caller.key_id, payload)
        self._wake.set()
        return request_id

    async def fetch(self, request_id: str, caller: ApiKey) -> Completion | None:
        """The completion once it is done (then it is gone), None while pending.

        Unknown, expired, already fetched and other keys' ids all read as not found.
        """
        if not is_id(request_id):  # never hand the database a string it did not make
            raise e.NotFound(f"No deferred completion with id {request_id[:64]!r}.")
        not_before = time.time() - self._ttl_s
        row = await asyncio.to_thread(self._store.take_deferred, request_id, caller.key_id, not_before)
        if row is None:
            raise e.NotFound(f"No deferred completion with id {request_id}.")
        if row.status == "done" and row.result is not None:
            result = codec.loads(row.result)
            assert isinstance(result, Completion)
            return result
        if row.status == "failed":
            raise _BY_STATUS.get(row.error_kind or "", e.InternalError)(row.error_message or "internal error")
        return None

    # -- the worker -------------------------------------------------------------------------------

    async def _work(self) -> None:
        last_renewal = time.monotonic()
        while True:
            try:
                await self._claim(batch=False, limit=self._concurrency)
                await self._claim(batch=True, limit=self._batch_concurrency)
                if self._recheck or time.monotonic() - last_renewal > self._lease_s / 3:
                    self._recheck = False
                    held = await asyncio.to_thread(
                        self._store.renew_leases, self._worker_id, list(self._running), self._lease_s
                    )
                    for request_id, task in list(self._running.items()):
                        if request_id not in held:  # its batch was cancelled: the row is settled already
                            task.cancel()
                    await asyncio.to_thread(self._store.expire_deferred, time.time() - self._ttl_s)
                    last_renewal = time.monotonic()
            except Exception:
                log.exception("deferred worker: database error; retrying")
            self._wake.clear()
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the wake
            # fires, and close() then waited forever for this loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, self._lease_s / 3)):
                    await self._wake.wait()

    async def _claim(self, batch: bool, limit: int) -> None:
        while time.monotonic() >= self._paused_until:
            if sum(1 for r in self._running if (r in self._batch) == batch) >= limit:
                return
            claimed = await asyncio.to_thread(
                self._store.claim_deferred, self._worker_id, self._lease_s, MAX_ATTEMPTS, batch
            )
            if claimed is None:
                return
            request_id, payload, endpoint = claimed
            if batch:
                self._batch.add(request_id)
            runner = self._runners.get(endpoint or "") if not batch else None
            work = self._run(request_id, payload, batch) if runner is None else runner(request_id, payload)
            self._running[request_id] = asyncio.create_task(self._tracked(request_id, work))

    async def _tracked(self, request_id: str, work: Awaitable[None]) -> None:
        """Run claimed work; one that finds the engine full of live requests (ResourceExhausted before
        any output) waits in the store."""
        try:
            await work
        except e.ResourceExhausted as exc:
            self._paused_until = time.monotonic() + (exc.retry_after or CAPACITY_BACKOFF_S)
            await asyncio.to_thread(self._store.requeue_deferred, request_id)
        finally:
            self._running.pop(request_id, None)
            self._batch.discard(request_id)
            self._wake.set()

    async def _run(self, request_id: str, payload: str, batch: bool = False) -> None:
        try:
            request = codec.loads(payload)
            owner = await asyncio.to_thread(self._store.deferred_owner, request_id)
            # Validated, access-checked and counted at submission; resolved again here, billed to its owner.
            admission = replace(await self._service.admit(request), key_id=owner)
            while True:
                try:
                    stream = await self._service.run(admission, api="batch" if batch else "deferred", background=batch)
                    completion = await collect(stream, request.n)
                    break
                except e.Preempted:  # an interactive request took its slot: start it again
                    continue
            await asyncio.to_thread(self._store.finish_deferred, request_id, codec.dumps(completion))
        except (asyncio.CancelledError, e.ResourceExhausted):
            raise
        except e.LocalXAIError as exc:
            await asyncio.to_thread(self._store.fail_deferred, request_id, exc.status.name, exc.message)
        except Exception:
            log.exception("deferred completion %s failed", request_id)
            await asyncio.to_thread(self._store.fail_deferred, request_id, e.Status.INTERNAL.name, "internal error")
