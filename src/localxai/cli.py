"""Command line: `localxai serve` builds Settings -> engine -> ChatService -> app and runs uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from localxai import __version__
from localxai.errors import ConfigError
from localxai.settings import Settings, build_settings

log = logging.getLogger("localxai")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localxai", description="Self-hosted xAI Chat Completions API.")
    parser.add_argument("--version", action="version", version=f"localxai {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API (default: the embedded Gemma 3 270M model)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port for xai-sdk clients (default 50051; 0 = off)")
    serve.add_argument("--model", help="path of a GGUF model (default: the embedded Gemma 3 270M)")
    serve.add_argument("--model-id", help="model id clients use (default: the file name without .gguf)")
    serve.add_argument(
        "--alias",
        action="append",
        metavar="NAME=MODEL",
        help="let clients call MODEL by NAME, e.g. grok-4=gemma-3-270m (repeatable)",
    )
    serve.add_argument("--api-key", action="append", help="accepted API key (repeatable; or LOCALXAI_API_KEYS=k1,k2)")
    serve.add_argument("--ctx-size", type=int, help="context tokens per request (default 8192)")
    serve.add_argument("--parallel", type=int, help="sequences decoded together (default 4)")
    serve.add_argument("--max-queue", type=int, help="requests that may wait for a sequence (default 64)")
    serve.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    serve.add_argument("--top-k", type=int, help="server-side top-k cut before sampling (default 40; 0 = off)")
    serve.add_argument("--max-n", type=int, help="largest n a request may ask for (default 16)")
    serve.add_argument(
        "--reasoning", action="store_true", help="the model is a reasoning model thinking in <think>...</think>"
    )
    serve.add_argument("--reasoning-tags", nargs=2, metavar=("START", "END"), help="its thinking delimiters")
    serve.add_argument(
        "--reasoning-open", action="store_true", help="the chat template opens the thinking block (output starts in it)"
    )
    serve.add_argument("--reasoning-efforts", help="accepted reasoning_effort values, e.g. low,medium,high")
    serve.add_argument("--data-dir", help="cache and state directory (default ~/.cache/localxai)")
    serve.add_argument("--engine", choices=["llamacpp", "fake"], help="'fake' serves a scripted test model")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = build_settings(vars(args))
    except ConfigError as exc:
        sys.exit(f"localxai: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        try:
            serve(settings)
        except ConfigError as exc:
            sys.exit(f"localxai: {exc}")


def serve(settings: Settings) -> None:
    import uvicorn

    from localxai.httpapi.app import create_app
    from localxai.runtime import Runtime

    runtime = Runtime.build([build_engine(settings)], settings.api_keys, settings.aliases, settings.max_n)
    for info in runtime.service.list_models():
        aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
        log.info("serving model %s%s, %d context tokens per request", info.id, aliases, info.context_length)
    if settings.open_access:
        log.warning("no API keys configured: accepting any bearer token, listening on %s only", settings.host)
    companions = []
    if settings.grpc_port:
        from localxai.grpcapi.server import grpc_server

        companions.append(lambda: grpc_server(runtime, settings.host, settings.grpc_port))
    app = create_app(runtime, companions)
    log.info("listening on http://%s:%d/v1", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


def build_engine(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.engine == "fake":
        from localxai.engines.fake import FakeEngine

        return FakeEngine(model_id=settings.model_id or "fake-model", context_length=settings.ctx_size)
    from localxai.engines.llamacpp.default_model import DEFAULT_MODEL_ID, default_model_path
    from localxai.engines.llamacpp.engine import LlamaCppEngine
    from localxai.engines.llamacpp.model import ContextShape
    from localxai.engines.output import ReasoningSpec

    if settings.model is None:
        path = default_model_path(settings.data_dir / "models")
        model_id = settings.model_id or DEFAULT_MODEL_ID
    else:
        path = settings.model
        model_id = settings.model_id or path.name.removesuffix(".gguf")
    shape = ContextShape(ctx_size=settings.ctx_size, threads=settings.threads, parallel=settings.parallel)
    reasoning = None
    if settings.reasoning:
        start, end = settings.reasoning_tags
        reasoning = ReasoningSpec(start=start, end=end, starts_thinking=settings.reasoning_open)
    return LlamaCppEngine(
        path,
        model_id,
        shape,
        top_k=settings.top_k,
        max_queue=settings.max_queue,
        reasoning=reasoning,
        reasoning_efforts=settings.reasoning_efforts,
    )
