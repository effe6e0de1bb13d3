from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from app.core.responses import ORJSONUTCResponse
from app.posts.schemas import PostOut

UTC = timezone.utc


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 25, 14, 1, 19, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 14, 1, 19, 5, tzinfo=UTC),
        datetime(2026, 11, 25, 14, 1, 19, 123456, tzinfo=UTC),
        datetime(2026, 11, 25, 14, 1, 19, 500, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_json_response_writes_what_pydantic_writes(moment: datetime) -> None:
    row = {
        "id": 2**40,
        "title": 'quote " and \\ and \u2028 and é',
        "body": "line\nbreak\t\x00",
        "author_id": 1,
        "created_at": moment,
        "updated_at": moment,
    }
    ours = ORJSONUTCResponse({"items": [row]}).body
    theirs = '{"items":[' + PostOut.model_validate(row).model_dump_json() + "]}"
    assert json.loads(ours) == json.loads(theirs)
    assert ours.decode().split('"created_at":')[1] == theirs.split('"created_at":')[1]
