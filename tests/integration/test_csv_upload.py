"""POST /api/upload-csv through the app: contract, bad files, limits, timeouts."""

from __future__ import annotations

import asyncio
import gzip
import io
import zipfile
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import pytest

from tests.unit.test_csv_summary import pandas_reference

pytestmark = pytest.mark.asyncio

GOOD = b"id,name,email,age,score\n1,Ann, Ann@X.com ,31,1.5\n2,Bob,bob@x.com,42,\n3,Cy,,50,9\n"


@pytest.fixture
def upload_settings(app: Any) -> Iterator[Callable[..., None]]:
    """Replaces app.state.settings for one test and puts the original back.
    Not monkeypatch.setattr: Starlette's State keeps its attributes outside
    __dict__, so pytest 9 takes them for absent and deletes them on undo,
    leaving the app without settings for every later test."""
    original = app.state.settings

    def override(**changes: Any) -> None:
        app.state.settings = original.model_copy(update=changes)

    yield override
    app.state.settings = original


async def post_csv(client: Any, headers: Dict[str, str], data: bytes) -> Any:
    return await client.post(
        "/api/upload-csv", headers=headers, files={"file": ("data.csv", data, "text/csv")}
    )


async def test_upload_returns_summary_of_kept_rows(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await post_csv(client, user["headers"], GOOD)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = pandas_reference(GOOD)
    assert body["total_rows"] == 2 == expected["total_rows"]
    assert body["unique_emails"] == 2
    assert set(body["summary"]) == {"id", "age", "score"}
    assert body["summary"]["age"] == {
        "count": 2,
        "mean": 36.5,
        "std": pytest.approx(expected["summary"]["age"]["std"]),
        "min": 31.0,
        "25%": 33.75,
        "50%": 36.5,
        "75%": 39.25,
        "max": 42.0,
    }
    assert body["summary"]["score"]["count"] == 1
    assert body["summary"]["score"]["std"] is None  # NaN (one value) is sent as null


async def test_infinite_values_are_sent_as_null(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await post_csv(client, user["headers"], b"id,name,email,x\n1,a,a@x,inf\n2,b,b@x,1\n")
    assert response.status_code == 200
    assert response.json()["summary"]["x"]["max"] is None
    assert response.json()["summary"]["x"]["min"] == 1.0


async def test_upload_requires_a_token(client: Any) -> None:
    response = await post_csv(client, {}, GOOD)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_missing_file_field_is_a_validation_error(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await client.post(
        "/api/upload-csv", headers=user["headers"], files={"other": ("a.csv", GOOD, "text/csv")}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


async def test_json_body_is_a_validation_error(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await client.post("/api/upload-csv", headers=user["headers"], json={"file": "x"})
    assert response.status_code == 422


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data.csv", GOOD)
    return out.getvalue()


TEN_MB_LINE = b"id,name,email," + b"x" * (10 * 1024 * 1024)

# (case, file bytes, expected status, expected code or None for 200)
BAD_FILES: List[Tuple[str, bytes, int, Optional[str]]] = [
    ("empty", b"", 400, "invalid_csv"),
    ("only blank lines", b"\n\r\n\n", 400, "invalid_csv"),
    ("header only", b"id,name,email,score\n", 200, None),
    ("header only without newline", b"id,name,email", 200, None),
    ("header only with BOM", b"\xef\xbb\xbfid,name,email\n", 200, None),
    ("no header (data first)", b"1,Ann,ann@x.com\n2,Bob,bob@x.com\n", 400, "missing_columns"),
    ("missing email column", b"id,name\n1,Ann\n", 400, "missing_columns"),
    ("whitespace only", b"   ", 400, "missing_columns"),
    ("tab separated", b"id\tname\temail\n1\ta\tb@c\n", 400, "missing_columns"),
    ("semicolon separated", b"id;name;email\n1;a;b@c\n", 400, "missing_columns"),
    ("latin-1 bytes", b"id,name,email\n1,Jos\xe9,j@x.com\n", 400, "invalid_csv"),
    ("truncated utf-8 at the end", b"id,name,email\n1,a,b@c\xc3", 400, "invalid_csv"),
    ("utf-8 with BOM", b"\xef\xbb\xbf" + GOOD, 200, None),
    ("utf-16 with BOM", GOOD.decode().encode("utf-16"), 400, "invalid_csv"),
    ("utf-16-be without BOM", GOOD.decode().encode("utf-16-be"), 400, "invalid_csv"),
    ("gzip", gzip.compress(GOOD), 400, "invalid_csv"),
    ("zip / xlsx", _zip_bytes(), 400, "invalid_csv"),
    ("png image", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 400, "invalid_csv"),
    ("random binary", bytes(range(256)) * 40, 400, "invalid_csv"),
    ("NUL byte in a row", b"id,name,email\n1,a\x00b,c@d\n", 400, "invalid_csv"),
    ("row with too many fields", b"id,name,email\n1,a,b@c\n2,b,c@d,extra\n", 400, "invalid_csv"),
    ("row with too few fields", b"id,name,email\n1,a,b@c\n2,b\n", 400, "invalid_csv"),
    ("duplicate column names", b"id,name,email,id\n1,a,b@c,2\n", 400, "invalid_csv"),
    ("quoted newline, comma, quotes", b'id,name,email\n1,"a\nb, ""c""",x@y\n', 200, None),
    ("CRLF line endings", GOOD.replace(b"\n", b"\r\n"), 200, None),
    ("10 MB single line", TEN_MB_LINE, 400, "invalid_csv"),
    (
        "10 MB single row",
        b"id,name,email\n1," + b"y" * (10 * 1024 * 1024) + b",a@b\n",
        400,
        "invalid_csv",
    ),
    ("numeric email column", b"id,name,email\n1,a,12\n2,b,13\n", 200, None),
    ("all emails empty", b"id,name,email,n\n1,a,,5\n2,b,  ,6\n", 200, None),
    ("empty header cell", b"id,name,email,\n1,a,b@c,\n", 200, None),
    ("NA tokens", b"id,name,email,n\nNA,a,b@c,null\n2,b,None,3\n", 200, None),
    ("leading blank lines", b"\n\n" + GOOD, 200, None),
]


@pytest.mark.parametrize("case,data,status,code", BAD_FILES, ids=[case for case, *_ in BAD_FILES])
async def test_every_bad_file_gets_its_documented_answer(
    client: Any, make_user: Any, case: str, data: bytes, status: int, code: Optional[str]
) -> None:
    user = await make_user()
    response = await post_csv(client, user["headers"], data)
    assert response.status_code == status, response.text[:300]
    if code is not None:
        assert response.json()["code"] == code
        assert response.json()["detail"]


async def test_bad_file_matrix_has_at_least_25_files() -> None:
    assert len(BAD_FILES) >= 25


async def test_invalid_utf8_detail_names_the_line(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await post_csv(client, user["headers"], b"id,name,email\n1,a,b\n2,\xff,c\n")
    assert "line 3" in response.json()["detail"]


async def test_missing_columns_detail_names_them(client: Any, make_user: Any) -> None:
    user = await make_user()
    response = await post_csv(client, user["headers"], b"id,mail\n1,x\n")
    assert response.json()["code"] == "missing_columns"
    assert "name" in response.json()["detail"] and "email" in response.json()["detail"]


# ------------------------------------------------------------ raw ASGI streaming
BOUNDARY = "testboundary1234"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    "Content-Type: text/csv\r\n\r\n"
).encode()
PART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def rows_forever(block_rows: int = 20000) -> Iterable[bytes]:
    yield PART_HEAD + b"id,name,email,score\n"
    block = b"".join(b"%d,n,u%d@x.com,%d.5\n" % (i, i, i) for i in range(block_rows))
    while True:
        yield block


async def asgi_upload(
    app: Any,
    token: str,
    chunks: Iterable[bytes],
    *,
    content_length: Optional[int] = None,
    stall_after: Optional[int] = None,
) -> Tuple[int, Dict[str, Any], int]:
    """Drive the app with a hand-made receive(): returns status, body, bytes pulled."""
    import json

    headers = [
        (b"host", b"test"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
    ]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/upload-csv",
        "raw_path": b"/api/upload-csv",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    iterator = iter(chunks)
    pulled = 0
    messages = 0

    async def receive() -> Dict[str, Any]:
        nonlocal pulled, messages
        messages += 1
        if stall_after is not None and messages > stall_after:
            await asyncio.sleep(3600)
        chunk = next(iterator, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: List[Dict[str, Any]] = []

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 60)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


async def test_stream_past_the_limit_is_cut_off_at_the_limit(
    app: Any, client: Any, make_user: Any
) -> None:
    """No Content-Length: the endpoint counts the bytes and stops reading."""
    user = await make_user()
    limit = app.state.settings.max_upload_bytes
    status, body, pulled = await asgi_upload(app, user["access_token"], rows_forever())
    assert status == 413 and body["code"] == "file_too_large"
    assert limit < pulled <= limit + 2 * 1024 * 1024


async def test_lying_content_length_does_not_lift_the_limit(
    app: Any, client: Any, make_user: Any, upload_settings: Callable[..., None]
) -> None:
    """The client declares 1 KB and keeps sending: refused at the limit."""
    user = await make_user()
    upload_settings(max_upload_bytes=300_000)
    status, body, pulled = await asgi_upload(
        app, user["access_token"], rows_forever(2000), content_length=1000
    )
    assert status == 413 and body["code"] == "file_too_large"
    assert pulled <= 300_000 + 200_000


async def test_declared_content_length_over_the_limit_is_refused_unread(
    app: Any, client: Any, make_user: Any
) -> None:
    user = await make_user()
    status, body, pulled = await asgi_upload(
        app, user["access_token"], rows_forever(), content_length=10**9
    )
    assert status == 413 and body["code"] == "file_too_large"
    assert pulled == 0


async def test_stalled_client_is_cut_off_by_the_read_timeout(
    app: Any, client: Any, make_user: Any, upload_settings: Callable[..., None]
) -> None:
    user = await make_user()
    upload_settings(upload_read_timeout=0.2)
    status, body, _ = await asgi_upload(app, user["access_token"], rows_forever(100), stall_after=2)
    assert status == 408 and body["code"] == "upload_timeout"


async def test_streamed_upload_in_small_chunks_matches_pandas(
    app: Any, client: Any, make_user: Any
) -> None:
    user = await make_user()
    data = b"".join(
        b"%d,n%d,U%d@X.com ,%d,%s\n"
        % (i, i, i % 50, i % 7, b"" if i % 11 == 0 else b"%.3f" % (i / 3))
        for i in range(3000)
    )
    data = b"id,name,email,k,v\n" + data
    payload = PART_HEAD + data + PART_TAIL
    chunks = [payload[i : i + 777] for i in range(0, len(payload), 777)]
    status, body, _ = await asgi_upload(app, user["access_token"], chunks)
    assert status == 200
    expected = pandas_reference(data)
    assert body["total_rows"] == expected["total_rows"]
    assert body["unique_emails"] == expected["unique_emails"] == 50
    for column in ("id", "k", "v"):
        for key, value in body["summary"][column].items():
            assert value == pytest.approx(expected["summary"][column][key], rel=1e-9)
