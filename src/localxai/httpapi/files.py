"""REST routes of the Files API: a multipart upload streamed into the store as it arrives, list, get,
delete and content.

The gateway does not buffer `POST /v1/files` (every other body is read whole before the route runs):
the parser below feeds the file's bytes to `Files.upload` a network chunk at a time, so memory stays
bounded whatever the file's size, and the 50 MB cap is counted on the bytes themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from localxai.auth import ApiKey
from localxai.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType
from localxai.files import MAX_FILE_BYTES, MAX_PAGE, Files
from localxai.store.files import FileRecord

UPLOAD_PATH = "/v1/files"
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + (1 << 20)  # the file, its framing and the small fields beside it
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16
EXPIRY_FIELDS = ("expires_after", "expires_after[seconds]", "expires_after[anchor]")


def streams_body(method: str, path: str) -> bool:
    """Whether the gateway hands this request's body to the route unread (an upload)."""
    return method == "POST" and path == UPLOAD_PATH


def file_body(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "expires_at": None if record.expires_at is None else int(record.expires_at),
        "filename": record.filename,
        "purpose": "",  # xAI ignores `purpose` and answers an empty one
    }


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None


class _Multipart:
    """The events of a multipart body as it arrives: ("part", _Part), ("data", bytes), ("end", None)."""

    def __init__(self, request: Request) -> None:
        kind, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnsupportedMediaType("Content-Type must be multipart/form-data with a boundary.")
        self._stream = request.stream()
        self._events: list[tuple[str, Any]] = []
        self._header: tuple[bytearray, bytearray] = (bytearray(), bytearray())
        self._headers: dict[str, bytes] = {}
        self._closed = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda d, s, e: self._header[0].extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header[1].extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._part,
                "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self._events.append(("end", None)),
                "on_end": self._end,
            },
        )

    def _header_end(self) -> None:
        field, value = self._header
        self._headers[field.decode("latin-1").lower()] = bytes(value)
        field.clear()
        value.clear()

    def _part(self) -> None:
        kind, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name")
        if kind != b"form-data" or name is None:
            raise InvalidArgument("Each part of the multipart body needs a Content-Disposition with a name.")
        filename = params.get(b"filename")
        self._events.append(("part", _Part(name.decode(), None if filename is None else filename.decode())))

    def _end(self) -> None:
        self._closed = True

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        try:
            async for chunk in self._stream:
                self._parser.write(chunk)
                for event in self._events:
                    yield event
                self._events.clear()
            self._parser.finalize()
        except (MultipartParseError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"The multipart body is malformed: {exc}") from None
        for event in self._events:
            yield event
        if not self._closed:
            raise InvalidArgument("The multipart body ended before its closing boundary.")


async def _data(events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
    """One part's bytes, up to its end."""
    while True:
        kind, value = await anext(events)
        if kind == "end":
            return
        yield value


async def _field(events: AsyncIterator[tuple[str, Any]], name: str) -> str:
    value = bytearray()
    async for piece in _data(events):
        value += piece
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidArgument(f"The form field {name!r} is longer than {MAX_FIELD_BYTES} bytes.")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"The form field {name!r} is not UTF-8 text.") from None


def _expiry(fields: dict[str, str]) -> int | None:
    """xAI's `expires_after` (seconds), or OpenAI's `expires_after[anchor]=created_at` + `[seconds]`."""
    anchor = fields.get("expires_after[anchor]")
    if anchor is not None and anchor != "created_at":
        raise InvalidArgument(f"expires_after[anchor] must be created_at, got {anchor!r}.")
    given = fields.get("expires_after", fields.get("expires_after[seconds]"))
    if given is None:
        if anchor is not None:
            raise InvalidArgument("expires_after[anchor] needs expires_after[seconds].")
        return None
    try:
        return int(given)
    except ValueError:
        raise InvalidArgument(f"expires_after must be a number of seconds, got {given!r}.") from None


async def upload(request: Request, files: Files, caller: ApiKey) -> FileRecord:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"A file may be at most {MAX_FILE_BYTES // 1_000_000} MB.")
    events = _Multipart(request).events()
    fields: dict[str, str] = {}
    record: FileRecord | None = None
    try:
        async for kind, part in events:
            if kind != "part":
                continue
            if part.name == "file":
                if record is not None:
                    raise InvalidArgument("The upload has more than one file part; send one file per request.")
                if not part.filename:
                    raise InvalidArgument("The file part needs a filename in its Content-Disposition.")
                record = await files.upload(caller.key_id, part.filename, _data(events), _expiry(fields))
                continue
            if part.name in EXPIRY_FIELDS and record is not None:
                raise InvalidArgument("expires_after must come before the file in the multipart body.")
            if len(fields) >= MAX_FIELDS:
                raise InvalidArgument(f"The upload has more than {MAX_FIELDS} form fields.")
            fields[part.name] = await _field(events, part.name)
    except BaseException:
        if record is not None:  # stored, but the rest of the body was bad: nothing stays
            await files.delete(record.id, caller.key_id)
        raise
    if record is None:
        raise InvalidArgument("The upload has no file part: send the file as the multipart field 'file'.")
    return record


def add_routes(app: FastAPI, files: Files) -> None:
    @app.post(UPLOAD_PATH)
    async def create_file(request: Request) -> dict[str, Any]:
        return file_body(await upload(request, files, request.state.api_key))

    @app.get("/v1/files")
    async def list_files(
        request: Request,
        limit: str = str(MAX_PAGE),
        order: str = "desc",
        sort_by: str = "created_at",
        pagination_token: str = "",
        after: str = "",
    ) -> dict[str, Any]:
        if not limit.isdigit():
            raise InvalidArgument(f"limit must be a number between 1 and {MAX_PAGE}, got {limit!r}.")
        records, token = await files.page(
            request.state.api_key.key_id, int(limit), order, sort_by, pagination_token or after
        )
        return {"data": [file_body(r) for r in records], "pagination_token": token}

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        return file_body(await files.get(file_id, request.state.api_key.key_id))

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
        await files.delete(file_id, request.state.api_key.key_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request, format: str = "original") -> StreamingResponse:
        if format not in ("original", "text"):
            raise InvalidArgument(f"format must be original or text, got {format!r}.")
        record, chunks = await files.content(file_id, request.state.api_key.key_id, text=format == "text")
        disposition = f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}"
        media = "text/plain; charset=utf-8" if format == "text" else "application/octet-stream"
        return StreamingResponse(chunks, media_type=media, headers={"Content-Disposition": disposition})
