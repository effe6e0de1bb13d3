from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, field_validator


class SendEmailRequest(BaseModel):
    subject: Optional[str] = Field(None, min_length=1, max_length=200)
    body: Optional[str] = Field(None, min_length=1, max_length=20_000)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: Optional[str]) -> Optional[str]:
        # A header value: line breaks would let a caller inject headers.
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError("subject must be a single line")
        return value


class EmailQueued(BaseModel):
    message: str = "Email queued"
    job_id: int
