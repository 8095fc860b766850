"""Screenshots of the web playground for the README: docs/playground-chat.png and docs/playground-code.png.

    .venv/bin/python docs/screenshots.py                       # the embedded default model
    .venv/bin/python docs/screenshots.py --model hf:ORG/REPO   # any `localxai serve` arguments

Starts `localxai serve` on free ports (no keys: open access), drives the page in Debian's chromium through
Playwright (the test extra), and writes the two images beside this file. Not part of `make test`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
# The default model is a small base model: structured output (a grammar) keeps its answer on topic.
QUESTION = "What are the three primary colors?"
SCHEMA = (
    '{"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"}, '
    '"minItems": 3, "maxItems": 3}}, "required": ["colors"]}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="localxai-shots-")) / "serve.log"
    command = [sys.executable, "-m", "localxai", "serve", "--port", str(port), "--grpc-port", str(free_port()), *args]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"localxai serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    sys.exit("localxai serve did not start in 300 s")


def main() -> None:
    process, url = serve(sys.argv[1:])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
            page.set_default_timeout(180_000)
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.fill("#system", "You are a helpful assistant.")
            page.fill("#temperature", "0")
            page.fill("#max-tokens", "64")
            page.select_option("#format", "json_schema")
            page.fill("#schema", SCHEMA)
            page.fill("#input", QUESTION)
            page.click("#send")
            page.locator(".msg.assistant .stat[data-stat=completion]").wait_for()
            page.screenshot(path=str(DOCS / "playground-chat.png"))
            page.click("#show-code")
            page.click("#code-dialog [data-lang=xai]")
            page.screenshot(path=str(DOCS / "playground-code.png"))
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    print("wrote", DOCS / "playground-chat.png", "and", DOCS / "playground-code.png")


if __name__ == "__main__":
    main()
