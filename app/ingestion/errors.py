"""Errors of the CSV upload endpoint (each a stable code and HTTP status)."""

from __future__ import annotations

from app.core.errors import AppError, BadRequest, PayloadTooLarge


class FileTooLarge(PayloadTooLarge):
    code = "file_too_large"
    message = "The uploaded file exceeds the upload limit"


class InvalidCsv(BadRequest):
    code = "invalid_csv"
    message = "The file is not a valid CSV file"


class MissingColumns(BadRequest):
    code = "missing_columns"
    message = "Required columns are missing"


class InvalidMultipart(BadRequest):
    code = "invalid_multipart"
    message = "The request body is not valid multipart/form-data"


class UploadIncomplete(BadRequest):
    code = "upload_incomplete"
    message = "The client disconnected before the upload finished"


class UploadTimeout(AppError):
    status_code = 408
    code = "upload_timeout"
    message = "The upload stalled: no data received within the read timeout"
