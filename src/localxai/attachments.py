"""Documents attached to messages, made prompt text before a request reaches an engine.

A file part names an uploaded file (the caller's own: another key's id is "not found"), carries the
bytes, or a URL fetched through the SSRF-checked fetcher. An image goes the image path (an image part
of a data URL); any other document becomes a text part holding its whole text (documents.py), marked
with its name and PDF page numbers. Nothing is cut: an uploaded document too long for the prompt is
searched by the model instead (`plan`, before an agent loop: the attachment_search tool); where no loop
runs, or the document came inline, the request fails saying so, never with a silently shortened prompt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import replace

from localxai.chat import ChatRequest, FilePart, ImagePart, Message, Part, ServerTool, TextPart
from localxai.documents import PAGE_BREAK, extract_text, is_image
from localxai.errors import InvalidArgument
from localxai.files import MAX_FILE_BYTES, Files
from localxai.media.fetch import MAX_IMAGE_BYTES, FetchPolicy, fetch

MAX_ATTACHMENTS = 32  # documents in one request
CHARS_PER_TOKEN = 3  # a cautious estimate, to decide without tokenizing megabytes
INLINE_SHARE = 0.5  # a document inlined takes at most this share of the model's context
SEARCH = "attachment_search"
DOCUMENT_HEAD = "The attached file "
IMAGE_MIMES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


def has_files(request: ChatRequest) -> bool:
    return any(isinstance(p, FilePart) for m in request.messages for p in m.content)


def decode_file_data(data: str | None, where: str) -> bytes | None:
    """`file_data`: base64, bare or as a data URL (what the OpenAI SDKs send)."""
    if not data:
        return None
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{where}.file_data must be base64 (or a base64 data URL).") from None


def file_part(
    where: str,
    file_id: str | None = None,
    data: bytes | None = None,
    url: str | None = None,
    filename: str | None = None,
) -> FilePart:
    """A file part from its wire fields: exactly one of an uploaded file's id, its bytes, a URL."""
    if sum(bool(v) for v in (file_id, data, url)) != 1:
        raise InvalidArgument(f"{where} needs exactly one of file_id, file_data or a file URL.")
    return FilePart(file_id=file_id or None, data=data or None, url=url or None, filename=filename or None)


class Attachments:
    def __init__(self, files: Files | None, fetch_policy: FetchPolicy) -> None:
        self._files = files
        self._policy = replace(fetch_policy, max_bytes=MAX_FILE_BYTES, timeout_s=max(fetch_policy.timeout_s, 30.0))

    async def plan(self, request: ChatRequest, owner: str | None, context_tokens: int) -> ChatRequest:
        """Where the agent loop runs (Responses, gRPC): an uploaded document too long for the prompt is not
        put there; the part says so and the request gains the attachment_search tool over it (xAI's way).
        The rest is left to `resolve`, at admission."""
        if not has_files(request) or self._files is None or owner is None:
            return request
        _check_count(request)
        budget = int(context_tokens * INLINE_SHARE * CHARS_PER_TOKEN)
        searched: list[str] = []
        messages = []
        for message in request.messages:
            parts: list[Part] = []
            for part in message.content:
                if isinstance(part, FilePart) and part.file_id is not None:
                    record = await self._files.get(part.file_id, owner)
                    if not is_image(await self._files.head(record)):
                        text = await self._files.text(record)
                        if len(text) > budget:
                            searched.append(record.id)
                            parts.append(TextPart(_searched_note(record.filename, text)))
                            continue
                parts.append(part)
            messages.append(replace(message, content=tuple(parts)))
        explicit = next((t for t in request.server_tools if t.kind == SEARCH), None)
        if not searched and explicit is None:
            return request
        attached = [p.file_id for m in request.messages for p in m.content if isinstance(p, FilePart) and p.file_id]
        settings = json.loads(explicit.config) if explicit is not None else {}
        tool = ServerTool(SEARCH, json.dumps({"limit": settings.get("limit") or 10,
                                              "file_ids": list(dict.fromkeys(attached))}))  # fmt: skip
        others = tuple(t for t in request.server_tools if t.kind != SEARCH)
        return replace(request, messages=tuple(messages), server_tools=(*others, tool))

    async def resolve(self, request: ChatRequest, owner: str | None, context_tokens: int | None = None) -> ChatRequest:
        """`request` with every file part made a text or an image part; the caller's error when one cannot be
        (a document too long for the model's context among them: never cut)."""
        if not has_files(request):
            return request
        _check_count(request)
        messages = await asyncio.gather(*(self._message(m, owner) for m in request.messages))
        if context_tokens is not None:
            budget = int(context_tokens * INLINE_SHARE * CHARS_PER_TOKEN)
            for message in messages:
                for part in message.content:
                    if isinstance(part, TextPart) and part.text.startswith(DOCUMENT_HEAD) and len(part.text) > budget:
                        raise InvalidArgument(
                            f"An attached document is about {len(part.text) // CHARS_PER_TOKEN} tokens, more than "
                            f"this model reads in one prompt ({context_tokens}). Upload it with the Files API and "
                            "attach it by file_id on the Responses API or gRPC: it is then searched "
                            "(attachment_search) instead of read whole."
                        )
        return replace(request, messages=tuple(messages))

    async def _message(self, message: Message, owner: str | None) -> Message:
        if not any(isinstance(p, FilePart) for p in message.content):
            return message
        parts: list[Part] = []
        for part in message.content:
            parts.append(await self._part(part, owner) if isinstance(part, FilePart) else part)
        return replace(message, content=tuple(parts))

    async def _part(self, part: FilePart, owner: str | None) -> Part:
        if part.file_id is not None:
            if self._files is None or owner is None:
                raise InvalidArgument("This server keeps no files: attach the document's bytes instead.")
            record = await self._files.get(part.file_id, owner)
            head = await self._files.head(record)
            if is_image(head):
                _, chunks = await self._files.content(record.id, owner)
                return _image(await _collect(chunks, MAX_IMAGE_BYTES, record.filename), record.filename)
            return _document(record.filename, await self._files.text(record))
        if part.data is not None:
            name = part.filename or "attachment"
            if is_image(part.data[:16]):
                return _image(part.data, name)
            return _document(name, await extract_text(name, _once(part.data)))
        assert part.url is not None
        fetched = await fetch(part.url, self._policy, "file_url")
        name = part.filename or part.url.rsplit("/", 1)[-1].split("?")[0] or "attachment"
        if is_image(fetched.body[:16]):
            return _image(fetched.body, name)
        return _document(name, await extract_text(name, _once(fetched.body)))


def _check_count(request: ChatRequest) -> None:
    count = sum(isinstance(p, FilePart) for m in request.messages for p in m.content)
    if count > MAX_ATTACHMENTS:
        raise InvalidArgument(f"Too many attached files: {count}; this server accepts at most {MAX_ATTACHMENTS}.")


def _document(name: str, text: str) -> TextPart:
    pages = text.split(PAGE_BREAK)
    if len(pages) > 1:
        text = "\n\n".join(f"[page {n}]\n{page}" for n, page in enumerate(pages, 1))
    # Parts are joined as they are: the document stands apart from the text around it.
    return TextPart(f"{DOCUMENT_HEAD}{name}:\n\n{text.strip()}\n\n(end of {name})\n\n")


def _searched_note(name: str, text: str) -> str:
    pages = text.count(PAGE_BREAK) + 1
    size = f"{pages} pages, " if pages > 1 else ""
    return (
        f"(The attached file {name}, {size}about {len(text) // CHARS_PER_TOKEN} tokens, is too long to show whole: "
        f"search it with the {SEARCH} tool.)\n\n"
    )


def _image(data: bytes, name: str) -> ImagePart:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(f"The image {name} is larger than {MAX_IMAGE_BYTES} bytes.")
    mime = next(m for magic, m in IMAGE_MIMES.items() if data.startswith(magic))
    return ImagePart(f"data:{mime};base64,{base64.b64encode(data).decode()}")


async def _collect(chunks: AsyncIterator[bytes], limit: int, name: str) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise InvalidArgument(f"The image {name} is larger than {limit} bytes.")
    return bytes(data)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
