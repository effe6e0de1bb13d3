from __future__ import annotations

from datetime import datetime
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

# `pattern` is a search: the title must contain at least one non-space character.
NON_BLANK = r"\S"


class PostCreate(BaseModel):
    title: str = Field(min_length=1, max_length=200, pattern=NON_BLANK)
    body: str = Field("", max_length=50_000)


class PostUpdate(BaseModel):
    title: Optional[str] = Field(None, min_length=1, max_length=200, pattern=NON_BLANK)
    body: Optional[str] = Field(None, max_length=50_000)

    @model_validator(mode="after")
    def _not_null(self) -> PostUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may be omitted but not null")
        return self


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body: str
    author_id: int
    created_at: datetime
    updated_at: datetime
