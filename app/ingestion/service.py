"""CSV ingestion: summarize an uploaded CSV file while it streams in."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Optional

from starlette.types import Receive

from app.ingestion.errors import FileTooLarge
from app.ingestion.upload import (
    ByteChannel,
    FilePartReader,
    TimedReceive,
    UploadAborted,
    missing_file_error,
    multipart_boundary,
)

if TYPE_CHECKING:
    from app.ingestion.csv_summary import CsvSummary

logger = logging.getLogger(__name__)

# Files parsed at once per process (each holds the memory described in
# csv_summary); more uploads wait with their socket paused. Threads, not
# processes: pyarrow and numpy release the GIL for the heavy work.
PARSE_WORKERS = 4
_executor: Optional[ThreadPoolExecutor] = None


def _parse_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=PARSE_WORKERS, thread_name_prefix="csv-parse")
    return _executor


def _summarize_channel(channel: ByteChannel) -> CsvSummary:
    # Imported here: pyarrow stays out of processes that never see an upload.
    from app.ingestion.csv_summary import summarize_csv

    try:
        return summarize_csv(channel.read_piece)
    finally:
        channel.consumer_done()


async def summarize_csv_upload(
    receive: Receive,
    content_type: Optional[str],
    *,
    max_file_bytes: int,
    read_timeout: float,
) -> CsvSummary:
    """Summarize the `file` field of the multipart body, parsed in a worker
    thread while it arrives. Raises FileTooLarge as soon as it passes
    `max_file_bytes`, UploadTimeout, InvalidCsv / MissingColumns after reading
    the body to its end (so the client sees the answer, not a reset),
    RequestValidationError without a `file` field, InvalidMultipart."""
    boundary = multipart_boundary(content_type)
    loop = asyncio.get_running_loop()
    channel = ByteChannel(loop)
    job: Optional[asyncio.Future[CsvSummary]] = None

    def start_job() -> None:
        nonlocal job
        job = loop.run_in_executor(_parse_executor(), _summarize_channel, channel)

    reader = FilePartReader(boundary, channel, max_file_bytes, start_job)
    receive_message = TimedReceive(receive, read_timeout)
    body_bytes = 0
    try:
        while True:
            message = await receive_message()
            body = message.get("body", b"")
            if body:
                body_bytes += len(body)
                await reader.feed(body)
            if not message.get("more_body", False):
                break
        await reader.finish()
    except BaseException as exc:
        channel.abort()
        if job is not None:
            await _wait_quietly(job)
        if isinstance(exc, FileTooLarge):
            logger.info(
                "csv upload refused: file over %d bytes, body_bytes_read=%d",
                max_file_bytes,
                body_bytes,
            )
        raise
    if job is None:
        raise missing_file_error()
    channel.close()
    return await job


async def _wait_quietly(job: asyncio.Future[CsvSummary]) -> None:
    """Let an aborted parsing thread finish; its outcome no longer matters."""
    try:
        await asyncio.shield(job)
    except UploadAborted:
        pass
    except Exception:  # noqa: BLE001 - the request already failed for another reason
        logger.debug("csv parsing ended with an error after the upload failed", exc_info=True)
