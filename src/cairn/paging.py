"""A page of a list: which slice of the rows a caller asked for (``page[number]``,
``page[size]``). Services take it and return the slice and the total; the transport turns it
into JSON:API pagination ``meta`` (``tfeapi.jsonapi.pagination_meta``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """Page ``number`` (from 1) of ``size`` rows."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size
