"""Request and response bodies of the service, as pydantic models.

Requests forbid unknown fields, so a misspelt filter is refused (422) instead of
silently ignored. Card numbers arrive as loosely typed values on purpose: each one
is checked on its own, so one malformed number never fails the whole batch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from features.schema import CARD_STATUSES

CardStatus = Literal["ok", "cold_start", "no_consent", "invalid"]
Channel = Literal["line", "email", "sms", "app", "web"]
Count = int | str  # a number of card holders, or "fewer than k" when hidden

MAX_K = 50
Cards = Annotated[
    list[Any],
    Field(
        min_length=1,
        description="Card numbers as strings of 10 digits (numbers are padded).",
    ),
]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Request):
    """Which offers to push to these card holders now."""

    cards: Cards
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 5
    channel: Channel | None = None
    exclude_offers: Annotated[list[ShortText], Field(max_length=1000)] = []


class NeedsRequest(_Request):
    """Which services these card holders are likely to need next."""

    cards: Cards
    top: Annotated[StrictInt, Field(ge=1, le=100)] | None = None


class OfferOut(BaseModel):
    """One recommended offer for one card holder."""

    rank: int
    offer_id: str
    title: str
    partner: str
    score: float
    reason: str


class NeedOut(BaseModel):
    """One need category and its calibrated propensity."""

    need_id: str
    label: str
    propensity: float


class CardResult(BaseModel):
    """What the service knows for one requested card, in the order given."""

    card_number: str | None = Field(description="Canonical number; None if invalid.")
    input: str | None = Field(default=None, description="The value sent, if invalid.")
    status: CardStatus
    reason: str | None = None
    offers: list[OfferOut] | None = None
    needs: list[NeedOut] | None = None


class RecommendResponse(BaseModel):
    """Offers per card, with the model versions that produced them."""

    model_versions: dict[str, str]
    feature_service: str
    k: int
    channel: str | None
    results: list[CardResult]


class NeedsResponse(BaseModel):
    """Need propensities per card, highest first."""

    model_versions: dict[str, str]
    feature_service: str
    results: list[CardResult]


class NeedThreshold(_Request):
    """Keep card holders whose propensity for one need is at least a value."""

    need_id: ShortText
    min_propensity: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class SegmentFilters(_Request):
    """Who is in the segment; an absent filter keeps everyone."""

    post_id: Annotated[list[ShortText], Field(min_length=1)] | None = None
    country: Annotated[list[ShortText], Field(min_length=1)] | None = None
    language: Annotated[list[ShortText], Field(min_length=1)] | None = None
    age_band: Annotated[list[ShortText], Field(min_length=1)] | None = None
    generation: Annotated[list[StrictInt], Field(min_length=1)] | None = None
    card_status: (
        Annotated[list[Literal[CARD_STATUSES]], Field(min_length=1)] | None  # type: ignore[valid-type]
    ) = None
    consent_marketing: StrictBool | None = None
    need: NeedThreshold | None = None


class SegmentRequest(_Request):
    """A segment to preview and how much of it to show."""

    filters: SegmentFilters = SegmentFilters()
    need_id: ShortText | None = Field(
        default=None,
        description="Need for expected responders; the filter's need, else the top.",
    )
    top_offers: Annotated[StrictInt, Field(ge=1, le=20)] = 5


class CountCell(BaseModel):
    """One cell of a breakdown: a value and how many card holders have it."""

    value: str
    count: Count


class HistogramBin(BaseModel):
    """Card holders whose propensity lies in [low, high)."""

    low: float
    high: float
    count: Count


class SegmentOffer(BaseModel):
    """An offer that ranks well for the segment."""

    offer_id: str
    title: str
    cards: Count
    mean_score: float | None


class SegmentPreview(BaseModel):
    """Privacy-safe facts about a segment: no card numbers, no small counts."""

    k: int
    size: Count
    reachable: Count
    need_id: str | None
    expected_responders: float | None
    breakdowns: dict[str, list[CountCell]]
    histogram: list[HistogramBin]
    best_offers: list[SegmentOffer]
    scored_at: str | None


class ErrorBody(BaseModel):
    """The JSON body of every error the service returns."""

    error: str
    message: str
    detail: list[dict[str, Any]] | None = None
