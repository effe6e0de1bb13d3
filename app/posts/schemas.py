from __future__ import annotations

from datetime import datetime
from typing import Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import Annotated

# `pattern` is a search: the title must contain at least one non-space character.
NON_BLANK = r"\S"


Title = Annotated[str, Field(min_length=1, max_length=200, pattern=NON_BLANK)]
Body = Annotated[str, Field(max_length=50_000)]


class PostCreate(BaseModel):
    # Python's regex engine, so `\S` agrees with str.isspace() and with
    # clients validating against the published schema in Python.
    model_config = ConfigDict(regex_engine="python-re")

    title: Title
    body: Body = ""


class PostUpdate(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")

    # Optional to omit, never null: SkipJsonSchema keeps null out of the schema.
    title: Union[Title, SkipJsonSchema[None]] = None
    body: Union[Body, SkipJsonSchema[None]] = None

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
