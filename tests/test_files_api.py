"""The Files API on the wire, through a real server on SQLite and PostgreSQL: the OpenAI SDK and httpx on
REST, xai-sdk on gRPC, one store for both (ids shared, each key its own files), and the bad uploads."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest
from xai_sdk import Client

from conftest import API_KEY, Server, private_database, start_server, stop_server

OTHER_KEY = "xai-files-other-key-0000"


def pdf(*pages: str, deflated: bytes | None = None) -> bytes:
    """A small valid PDF whose pages show `pages` (or one page whose content is the `deflated` stream)."""
    contents = [deflated] if deflated is not None else [f"BT /F1 12 Tf 72 720 Td ({p}) Tj ET".encode() for p in pages]
    count = len(contents)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode()]
    font = 3 + 2 * count
    for i, content in enumerate(contents):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        flate = b" /Filter /FlateDecode" if deflated is not None else b""
        objects.append(b"<< /Length %d%s >>\nstream\n" % (len(content), flate) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--api-key", API_KEY, "--api-key", OTHER_KEY, "--ctx-size", "1024", "--file-quota-mb", "60"]
    tmp = tmp_path_factory.mktemp(f"files-{request.param}")
    with private_database(request.param, tmp) as url:
        running = start_server(tmp, *args, "--database-url", url)
        yield running
        stop_server(running)


def oai(server: Server, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def xai(server: Server, key: str = API_KEY) -> Client:
    return Client(api_key=key, api_host=f"localhost:{server.grpc_port}", timeout=60)


def test_openai_sdk_uploads_lists_reads_and_deletes(server: Server) -> None:
    client = oai(server)
    notes = b"# Notes\n\nThe launch code is 4711.\n"
    made = client.files.create(file=("notes.md", notes), purpose="assistants")
    assert made.id.startswith("file_") and made.bytes == len(notes) and made.filename == "notes.md"
    assert client.files.retrieve(made.id).bytes == len(notes)
    assert made.id in [f.id for f in client.files.list()]
    assert client.files.content(made.id).content == notes
    with pytest.raises(openai.NotFoundError):
        oai(server, OTHER_KEY).files.retrieve(made.id)  # another key's file does not exist for it
    assert made.id not in [f.id for f in oai(server, OTHER_KEY).files.list()]
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(made.id)
    assert gone.value.body == "File not found, deleted, or expired."  # xAI's body: its error text


def test_xai_sdk_shares_the_store_with_rest(server: Server) -> None:
    client = xai(server)
    uploaded = client.files.upload(b"a,b\n1,2\n" * 1000, filename="table.csv", expires_after=7200)
    assert uploaded.id.startswith("file_") and uploaded.size == 8000 and uploaded.filename == "table.csv"
    assert uploaded.expires_at.seconds - uploaded.created_at.seconds == 7200
    assert oai(server).files.retrieve(uploaded.id).bytes == 8000  # the same file on REST
    assert client.files.get(uploaded.id).filename == "table.csv"
    assert client.files.content(uploaded.id) == b"a,b\n1,2\n" * 1000
    listed = client.files.list(limit=100, order="desc", sort_by="size")
    assert uploaded.id in [f.id for f in listed.data]
    with pytest.raises(grpc.RpcError) as foreign:
        xai(server, OTHER_KEY).files.get(uploaded.id)
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(grpc.RpcError) as deleted:
        client.files.content(uploaded.id)
    assert deleted.value.code() == grpc.StatusCode.NOT_FOUND


def test_pages_follow_the_token_and_after(server: Server) -> None:
    client = oai(server, OTHER_KEY)
    made = [client.files.create(file=(f"p{i}.txt", b"x" * (i + 1)), purpose="assistants").id for i in range(5)]
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    seen, token = [], ""
    while True:
        page = api.get("/files", params={"limit": 2, "order": "asc", "sort_by": "size", "pagination_token": token})
        assert page.status_code == 200, page.text
        seen += [f["id"] for f in page.json()["data"]]
        token = page.json()["pagination_token"]
        if len(page.json()["data"]) < 2:
            break
    assert seen == made
    after = api.get("/files", params={"order": "asc", "sort_by": "size", "after": made[2]}).json()["data"]
    assert [f["id"] for f in after] == made[3:]
    assert api.get("/files", params={"pagination_token": "file_nope"}).status_code == 400
    assert api.get("/files", params={"limit": "many"}).status_code == 400
    for file_id in made:
        client.files.delete(file_id)


def test_pdf_text_and_hostile_documents(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    made = api.post("/files", files={"file": ("two.pdf", pdf("First page here", "Second page there"))}).json()
    text = api.get(f"/files/{made['id']}/content", params={"format": "text"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text.split("\f") == ["First page here", "Second page there"]
    assert api.get(f"/files/{made['id']}/content").content.startswith(b"%PDF-1.4")
    assert xai(server).files.content(made["id"]) == api.get(f"/files/{made['id']}/content").content
    # A PDF bomb: a few MB of deflated zeros that inflate past the reader's memory limit.
    bomb = api.post("/files", files={"file": ("bomb.pdf", pdf(deflated=deflated_zeros(1500 << 20)))}).json()
    refused = api.get(f"/files/{bomb['id']}/content", params={"format": "text"})
    assert refused.status_code == 400 and "bomb.pdf" in refused.json()["error"], refused.text
    broken = api.post("/files", files={"file": ("broken.pdf", b"%PDF-1.4\n garbage")}).json()
    refused = api.get(f"/files/{broken['id']}/content", params={"format": "text"})
    assert refused.status_code == 400 and "not a PDF this server can read" in refused.json()["error"]
    binary = api.post("/files", files={"file": ("blob.bin", bytes(range(256)) * 4)}).json()
    refused = api.get(f"/files/{binary['id']}/content", params={"format": "text"})
    assert refused.status_code == 400 and "neither text nor a PDF" in refused.json()["error"]
    assert api.get(f"/files/{binary['id']}/content", params={"format": "html"}).status_code == 400
    assert "Traceback" not in server.log.read_text()


def test_bad_uploads_get_xai_errors_and_leave_nothing(server: Server) -> None:
    api = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    before = {f["id"] for f in api.get("/files").json()["data"]}
    late = api.post("/files", files={"file": ("late.txt", b"hello")}, data={"expires_after": "7200"})
    # httpx writes data fields before files: the field order is set by hand below.
    assert late.status_code == 200 and late.json()["expires_at"] - late.json()["created_at"] == 7200
    api.delete(f"/files/{late.json()['id']}")
    boundary = "b0undary"
    after_file = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="expires_after"\r\n\r\n7200\r\n--{boundary}--\r\n'
    )
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    wrong_order = api.post("/files", content=after_file, headers=multipart)
    assert wrong_order.status_code == 400 and "before the file" in wrong_order.json()["error"]
    openai_style = api.post(
        "/files",
        data={"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
        files={"file": ("o.txt", b"x")},
    ).json()
    assert openai_style["expires_at"] - openai_style["created_at"] == 3600
    api.delete(f"/files/{openai_style['id']}")
    for data, message in (
        ({"expires_after": "10"}, "between 3600"),
        ({"expires_after": "soon"}, "number of seconds"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "created_at"),
    ):
        bad = api.post("/files", data=data, files={"file": ("x.txt", b"x")})
        assert bad.status_code == 400 and message in bad.json()["error"], bad.text
    assert api.post("/files", data={"purpose": "assistants"}).status_code in (400, 415)
    assert api.post("/files", json={"file": "x"}).status_code == 415
    cut = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    assert api.post("/files", content=cut, headers=multipart).status_code == 400
    no_name = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nhello\r\n--{boundary}--\r\n'
    assert "filename" in api.post("/files", content=no_name, headers=multipart).json()["error"]
    # 50 MB and one byte, streamed without a Content-Length: 413 on the bytes themselves.
    huge = api.post("/files", files={"file": ("big.bin", _Sized(50_000_001))})
    assert huge.status_code == 413 and "50 MB" in huge.json()["error"], huge.text
    assert _declared_only(server, 60 << 20).startswith(b"HTTP/1.1 413")  # refused before any byte is read
    # Over the key's quota (60 MiB here): 429 with the reason, and the partial upload is gone.
    kept = api.post("/files", files={"file": ("fill.bin", b"f" * 40_000_000)}).json()
    over = api.post("/files", files={"file": ("more.bin", b"m" * 30_000_000)})
    assert over.status_code == 429 and "storage is full" in over.json()["error"]
    api.delete(f"/files/{kept['id']}")
    assert {f["id"] for f in api.get("/files").json()["data"]} == before
    foreign = oai(server).files.create(file=("mine.txt", b"mine"), purpose="assistants")
    other = httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.delete(f"/files/{foreign.id}").status_code == 404
    assert other.get(f"/files/{foreign.id}/content").status_code == 404
    assert api.get(f"/files/{foreign.id}").status_code == 200
    api.delete(f"/files/{foreign.id}")


def test_grpc_upload_needs_init_first(server: Server) -> None:
    from xai_sdk.proto import files_pb2, files_pb2_grpc

    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    stub = files_pb2_grpc.FilesStub(channel)
    metadata = (("authorization", f"Bearer {API_KEY}"),)
    for messages in ([files_pb2.UploadFileChunk(data=b"x")], []):
        with pytest.raises(grpc.RpcError) as refused:
            stub.UploadFile(iter(messages), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "init" in refused.value.details()
    twice = [files_pb2.UploadFileChunk(init=files_pb2.UploadFileInit(name="a"))] * 2
    with pytest.raises(grpc.RpcError) as refused:
        stub.UploadFile(iter(twice), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as filtered:
        stub.ListFiles(files_pb2.ListFilesRequest(filter="size_bytes > 1"), metadata=metadata)
    assert filtered.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "filter" in filtered.value.details()
    channel.close()


class _Sized:
    """A file-like object of `size` bytes that never holds them: httpx streams it."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"z" * n


def deflated_zeros(size: int) -> bytes:
    """`size` zero bytes, deflated a MiB at a time (never held whole)."""
    packer = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


def _declared_only(server: Server, length: int) -> bytes:
    """The answer to upload headers that declare `length` bytes, sent without the bytes."""
    import socket

    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        return conn.recv(4096)


QUESTION = "What is the launch code in the document? Answer with the number only."
DOCUMENT = "Project notes.\nThe launch code is 4711.\nThe weather was fine.\n"


def test_chat_with_an_uploaded_file_through_openai(server: Server) -> None:
    client = oai(server)
    made = client.files.create(file=("notes.pdf", pdf(*DOCUMENT.splitlines())), purpose="assistants")
    asked = [{"type": "text", "text": QUESTION}]
    attached = [{"type": "file", "file": {"file_id": made.id}}, *asked]
    plain = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": asked}], temperature=0, max_tokens=16
    )
    answer = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": attached}], temperature=0, max_tokens=16
    )
    assert "4711" in (answer.choices[0].message.content or "")
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the document is in the prompt, counted
    with pytest.raises(openai.NotFoundError):  # another key's file cannot be attached
        oai(server, OTHER_KEY).chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": attached}], max_tokens=4
        )
    both = [{"type": "file", "file": {"file_id": made.id, "file_data": "aGk="}}, *asked]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gemma-3-270m", messages=[{"role": "user", "content": both}])
    assert "exactly one of file_id" in str(refused.value.body)


def test_responses_input_file_inline_and_by_id(server: Server) -> None:
    import base64

    client = oai(server)
    inline = {"type": "input_file", "filename": "notes.txt",
              "file_data": "data:text/plain;base64," + base64.b64encode(DOCUMENT.encode()).decode()}  # fmt: skip
    answer = client.responses.create(
        model="gemma-3-270m",
        input=[{"role": "user", "content": [inline, {"type": "input_text", "text": QUESTION}]}],
        temperature=0,
        max_output_tokens=32,  # it may quote the document before the number
    )
    assert "4711" in answer.output_text
    made = client.files.create(file=("notes.txt", DOCUMENT.encode()), purpose="assistants")
    by_id = client.responses.create(
        model="gemma-3-270m",
        input=[
            {
                "role": "user",
                "content": [{"type": "input_file", "file_id": made.id}, {"type": "input_text", "text": QUESTION}],
            }
        ],
        temperature=0,
        max_output_tokens=32,  # it may quote the document before the number
    )
    assert "4711" in by_id.output_text
    items = client.responses.input_items.list(by_id.id).data
    assert items[0].content[0].type == "input_file" and items[0].content[0].file_id == made.id
    binary = {"type": "input_file", "filename": "x.bin", "file_data": base64.b64encode(bytes(range(256))).decode()}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gemma-3-270m", input=[{"role": "user", "content": [binary]}])
    assert "neither text nor a PDF" in str(refused.value.body)
    private = {"type": "input_file", "file_url": f"{server.base_url}/health"}
    with pytest.raises(openai.BadRequestError) as refused:  # the SSRF rules: no loopback targets
        client.responses.create(model="gemma-3-270m", input=[{"role": "user", "content": [private]}])
    assert "file_url" in str(refused.value.body)


def test_xai_sdk_chat_with_a_file(server: Server) -> None:
    from xai_sdk.chat import file, user

    client = xai(server)
    uploaded = client.files.upload(DOCUMENT.encode(), filename="notes.md")
    chat = client.chat.create(model="gemma-3-270m", temperature=0, max_tokens=16)
    chat.append(user(QUESTION, file(uploaded.id)))
    assert "4711" in chat.sample().content
    inline = client.chat.create(model="gemma-3-270m", temperature=0, max_tokens=16)
    inline.append(user(QUESTION, file(data=DOCUMENT.encode(), filename="notes.md")))
    assert "4711" in inline.sample().content
    with pytest.raises(grpc.RpcError) as foreign:
        other = xai(server, OTHER_KEY).chat.create(model="gemma-3-270m", max_tokens=4)
        other.append(user(QUESTION, file(uploaded.id)))
        other.sample()
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_document_too_long_for_the_prompt_is_searched(server: Server) -> None:
    """Past half the context (1,024 tokens here), an uploaded document is not put in the prompt: the model gets
    the attachment_search tool over it (as xAI does), and Chat Completions says where that runs."""
    filler = "".join(
        f"Section {n}: the committee discussed budgets, rooms and schedules at length.\n" for n in range(300)
    )
    text = filler[: len(filler) // 2] + "The vault combination is 8142.\n" + filler[len(filler) // 2 :]
    client = oai(server)
    made = client.files.create(file=("minutes.txt", text.encode()), purpose="assistants")
    asked = [
        {"type": "input_file", "file_id": made.id},
        {"type": "input_text", "text": "What is the vault combination?"},
    ]
    response = client.responses.create(
        model="gemma-3-270m",
        input=[{"role": "user", "content": asked}],
        tool_choice="required",  # the small model would rarely search on its own
        max_output_tokens=24,
        extra_body={"max_turns": 2},
    )
    [call] = [item for item in response.output if item.type == "attachment_search_call"]
    assert call.status == "completed", call
    assert response.usage.input_tokens < 1024  # the document was never in the prompt whole
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gemma-3-270m", max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": made.id}},
                                                   {"type": "text", "text": "Summarise."}]}],
        )  # fmt: skip
    assert "attachment_search" in str(refused.value.body)
