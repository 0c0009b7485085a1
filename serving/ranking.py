"""Per-card offers and needs for the service, tested without a server.

A request's card numbers are checked one by one (a malformed number becomes an
``invalid`` result, never a failed batch), turned into keyed pseudonyms, and looked
up in the Feast online store in one call through a small cache with a freshness
bound (:mod:`serving.online`). A scorer compiled from the champion models at load
time (:mod:`serving.compiled`) gives calibrated propensities and ranked offers with
the business rules applied; :meth:`Scorer.reference_offers` is the same answer
through :meth:`training.offers.OfferModel.recommend` and
:func:`training.rules.apply_rules`, which tests compare it with.

Statuses per card:

- ``ok``: known card with interactions: ranked offers or needs.
- ``cold_start``: a card the online store does not know (issued after the last
  build) or one without offer interactions: segment and popularity offers.
- ``no_consent``: marketing consent (offers) or analytics consent (needs) is not
  on record as granted: nothing is returned.
- ``invalid``: the value is not a card number; the reason says why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.cards import canonical_card_number, pseudonym
from features.errors import InputError, LimitExceededError, NotReadyError
from features.schema import CARD_KEY, NEED_CATEGORIES, OFFER_ID
from features.settings import Settings
from serving.compiled import CompiledScorer, RankedOffer, frame_rows
from serving.online import CardRow, FeatureCache, card_frame
from serving.schemas import (
    CardResult,
    NeedOut,
    NeedsRequest,
    NeedsResponse,
    OfferOut,
    RecommendRequest,
    RecommendResponse,
)
from serving.settings import ServingSettings

if TYPE_CHECKING:
    from training.needs import NeedsModel
    from training.offers import OfferModel

logger = logging.getLogger(__name__)

NEEDS_MODEL = "needs-model"
OFFER_MODEL = "offer-model"
CARD_SERVICE = "needs_v1"  # holds every card view both models read
OFFER_SERVICE = "offers_v1"
MAX_INPUT_ECHO = 40
UNKNOWN_CARD = "card not known to the service yet; offers popular with card holders"
NEW_CARD = "no offer history yet; offers popular with similar card holders"

__all__ = ["FeatureCache", "Scorer", "card_frame", "frame_rows", "load_scorer"]


@dataclass(frozen=True)
class ParsedCard:
    """One requested card: its canonical number and pseudonym, or why it is bad."""

    raw: object
    number: str | None
    card_key: str | None
    problem: str | None


def check_batch_size(raw_cards: Sequence[object], limit: int) -> None:
    """Refuse a request with more than ``limit`` cards.

    Raises:
        LimitExceededError: naming the limit (413).
    """
    if len(raw_cards) > limit:
        raise LimitExceededError(
            f"cards: expected at most {limit} card numbers per request, got "
            f"{len(raw_cards)}; split the batch into requests of {limit}"
        )


def parse_cards(
    raw_cards: Sequence[object], secret: bytes, limit: int
) -> list[ParsedCard]:
    """Canonicalise and pseudonymise each card number on its own.

    Args:
        raw_cards: values as received (strings, or integers that lost zeros).
        secret: the pseudonym secret.
        limit: most cards allowed in one request.

    Raises:
        LimitExceededError: when there are more cards than ``limit``.
    """
    check_batch_size(raw_cards, limit)
    parsed = []
    for raw in raw_cards:
        try:
            number = canonical_card_number(raw)
        except InputError as error:
            parsed.append(ParsedCard(raw, None, None, str(error)))
            continue
        parsed.append(ParsedCard(raw, number, pseudonym(number, secret), None))
    return parsed


@dataclass
class OfferCatalogue:
    """Offer facts the ranker and rules read, precomputed once per load."""

    facts: pd.DataFrame  # offers_v1 offer features, one row per offer
    rule_offers: pd.DataFrame  # rules' offer table, indexed by offer id
    titles: dict[str, tuple[str, str]]  # offer id -> (title, partner)


class Scorer:
    """Answers /recommend and /needs from the champion models and online features.

    Args:
        needs_model: the champion needs model.
        offer_model: the champion offer model.
        versions: registry version of each model by name.
        features: cache over the online store.
        catalogue: precomputed offer facts.
        secret: the pseudonym secret.
        at: the moment offers are checked for validity.
        serving: limits and knobs of the service.
    """

    def __init__(
        self,
        needs_model: NeedsModel,
        offer_model: OfferModel,
        versions: dict[str, str],
        features: FeatureCache,
        catalogue: OfferCatalogue,
        secret: bytes,
        at: pd.Timestamp,
        serving: ServingSettings,
    ) -> None:
        self.needs_model = needs_model
        self.offer_model = offer_model
        self.versions = versions
        self.features = features
        self.catalogue = catalogue
        self.secret = secret
        self.at = at
        self.serving = serving
        self.known_cards = offer_model.known_cards_
        self.compiled = CompiledScorer(
            needs_model, offer_model, catalogue.facts, catalogue.rule_offers, at
        )

    def info(self) -> dict[str, Any]:
        """Model versions, feature services and the clock of the rules."""
        return {
            "model_versions": self.versions,
            "feature_services": {"needs": CARD_SERVICE, "offers": OFFER_SERVICE},
            "offers_checked_at": self.at.isoformat(),
            "offers_in_catalogue": len(self.catalogue.facts),
            "feature_cache": {
                "max_age_seconds": self.features.max_age,
                "hits": self.features.hits,
                "misses": self.features.misses,
            },
        }

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Offers for each requested card, in the order given."""
        parsed = parse_cards(request.cards, self.secret, self.serving.max_cards)
        keys = _unique_keys(parsed)
        results: dict[str, CardResult] = {}
        if keys:
            results = self._recommend_keys(keys, request)
        return RecommendResponse(
            model_versions=self.versions,
            feature_service=OFFER_SERVICE,
            k=request.k,
            channel=request.channel,
            results=[_result_for(card, results) for card in parsed],
        )

    def needs(self, request: NeedsRequest) -> NeedsResponse:
        """Need propensities for each requested card, highest first."""
        parsed = parse_cards(request.cards, self.secret, self.serving.max_cards)
        keys = _unique_keys(parsed)
        results: dict[str, CardResult] = {}
        if keys:
            results = self._needs_keys(keys, request.top)
        return NeedsResponse(
            model_versions=self.versions,
            feature_service=CARD_SERVICE,
            results=[_result_for(card, results) for card in parsed],
        )

    def card_features(self, keys: list[str]) -> pd.DataFrame:
        """Online features of unique card keys as a typed frame, keys as a column."""
        frame = self.features.get(keys)
        frame[CARD_KEY] = keys
        return frame

    def propensities(self, features: pd.DataFrame) -> pd.DataFrame:
        """Calibrated propensities: ``card_key`` and one column per need."""
        scored = self.needs_model.predict_proba(features)
        scored.insert(0, CARD_KEY, features[CARD_KEY].to_numpy())
        return scored.reset_index(drop=True)

    def offers(
        self,
        keys: list[str],
        k: int,
        exclude: Sequence[str] = (),
        rows: list[CardRow] | None = None,
    ) -> dict[str, list[RankedOffer]]:
        """Kept offers of consented or unknown cards, through the compiled scorer.

        ``rows`` are the cards' online rows when the caller has read them already
        (one read per request, even with the feature cache off).
        """
        if rows is None:
            rows = self.features.rows(keys)
        propensities = self.compiled.propensities(rows)
        offered = [
            i
            for i, row in enumerate(rows)
            if _row_flag(row, "marketing_consent") or not _row_known(row)
        ]
        return self.compiled.recommend(
            [keys[i] for i in offered],
            [rows[i] for i in offered],
            propensities[offered],
            k,
            exclude,
        )

    def reference_offers(
        self, keys: list[str], k: int, exclude: Sequence[str] = ()
    ) -> dict[str, list[RankedOffer]]:
        """The same answer as :meth:`offers` through the frame-based pipeline.

        :meth:`training.offers.OfferModel.recommend`, then
        :func:`training.rules.apply_rules`, as evaluation and batch scoring run
        them; slow, and kept as the reference the compiled path is tested against.
        """
        from training.evaluation import rule_inputs
        from training.rules import apply_rules

        features = self.card_features(keys)
        offered = [
            key
            for key, known, yes in zip(
                keys,
                _known_to_store(features),
                _flag(features, "marketing_consent"),
                strict=True,
            )
            if yes or not known
        ]
        if not offered:
            return {}
        chosen = features[features[CARD_KEY].isin(offered)]
        scored = self.offer_model.recommend(
            offered,
            chosen,
            self.propensities(features),
            self.catalogue.facts,
            self.offer_model.n_candidates,
        )
        cards, _ = rule_inputs(_for_rules(chosen), self.catalogue.facts.head(0))
        kept = apply_rules(
            scored, cards, self.catalogue.rule_offers, self.at, k, exclude=exclude
        )
        lists: dict[str, list[RankedOffer]] = {}
        columns = [CARD_KEY, OFFER_ID, "rank", "score", "reason"]
        for key, offer, rank, score, reason in kept[columns].itertuples(index=False):
            lists.setdefault(key, []).append(
                RankedOffer(int(rank), str(offer), float(score), str(reason))
            )
        return lists

    def _recommend_keys(
        self, keys: list[str], request: RecommendRequest
    ) -> dict[str, CardResult]:
        rows = self.features.rows(keys)
        ranked = self.offers(keys, request.k, request.exclude_offers, rows)
        results = {}
        for key, row in zip(keys, rows, strict=True):
            in_store = _row_known(row)
            if in_store and not _row_flag(row, "marketing_consent"):
                results[key] = CardResult(
                    card_number=None,
                    status="no_consent",
                    reason="marketing consent not granted; no offers",
                    offers=[],
                )
                continue
            status, reason = self._status(key, in_store)
            results[key] = CardResult(
                card_number=None,
                status=status,
                reason=reason,
                offers=self._offer_list(ranked.get(key, [])),
            )
        return results

    def _offer_list(self, kept: list[RankedOffer]) -> list[OfferOut]:
        out = []
        for offer in kept:
            title, partner = self.catalogue.titles.get(
                offer.offer_id, (offer.offer_id, "")
            )
            out.append(
                OfferOut(
                    rank=offer.rank,
                    offer_id=offer.offer_id,
                    title=title,
                    partner=partner,
                    score=round(offer.score, 6),
                    reason=offer.reason,
                )
            )
        return out

    def _needs_keys(self, keys: list[str], top: int | None) -> dict[str, CardResult]:
        rows = self.features.rows(keys)
        values = self.compiled.propensities(rows)
        need_ids = self.compiled.needs.need_ids

        results = {}
        for row_number, (key, row) in enumerate(zip(keys, rows, strict=True)):
            in_store = _row_known(row)
            if in_store and not _row_flag(row, "analytics_consent"):
                results[key] = CardResult(
                    card_number=None,
                    status="no_consent",
                    reason="analytics consent not granted; no propensities",
                    needs=[],
                )
                continue
            status, reason = self._status(key, in_store)
            order = np.argsort(-values[row_number], kind="stable")[:top]
            needs = [
                NeedOut(
                    need_id=need_ids[i],
                    label=NEED_CATEGORIES.get(need_ids[i], need_ids[i]),
                    propensity=round(float(values[row_number, i]), 6),
                )
                for i in order
            ]
            results[key] = CardResult(
                card_number=None, status=status, reason=reason, needs=needs
            )
        return results

    def _status(self, key: str, in_store: bool) -> tuple[str, str | None]:
        if not in_store:
            return "cold_start", UNKNOWN_CARD
        if key not in self.known_cards:
            return "cold_start", NEW_CARD
        return "ok", None


def _row_known(row: CardRow) -> bool:
    """The online store holds a profile for the card (unknown keys read None)."""
    return row.get("card_status") is not None


def _row_flag(row: CardRow, column: str) -> bool:
    value = row.get(column)
    try:
        number = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        number = math.nan
    return not math.isnan(number) and number > 0


def _unique_keys(parsed: list[ParsedCard]) -> list[str]:
    return list(dict.fromkeys(c.card_key for c in parsed if c.card_key is not None))


def _result_for(card: ParsedCard, results: dict[str, CardResult]) -> CardResult:
    if card.card_key is None:
        return CardResult(
            card_number=None,
            input=_echo(card.raw),
            status="invalid",
            reason=card.problem,
        )
    return results[card.card_key].model_copy(update={"card_number": card.number})


def _echo(raw: object) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    return text[:MAX_INPUT_ECHO]


def _known_to_store(features: pd.DataFrame) -> list[bool]:
    """Cards the online store holds a profile for (unknown keys come back null)."""
    if "card_status" not in features.columns:
        return [False] * len(features)
    return features["card_status"].notna().tolist()


def _flag(features: pd.DataFrame, column: str) -> list[bool]:
    if column not in features.columns:
        return [False] * len(features)
    values = pd.to_numeric(features[column], errors="coerce").fillna(0)
    return (values > 0).tolist()


def _for_rules(features: pd.DataFrame) -> pd.DataFrame:
    """Card rows the rules read; a card unknown to the store is an active card of
    unknown age and region with no redeemed offers, whose consent the caller holds.
    """
    frame = features.copy()
    unknown = frame["card_status"].isna()
    if unknown.any():
        frame.loc[unknown, "card_status"] = "active"
        frame.loc[unknown, "marketing_consent"] = 1
    if "redeemed_offer_ids" in frame.columns:
        frame["redeemed_offer_ids"] = [
            list(v) if isinstance(v, (list, tuple, np.ndarray)) else []
            for v in frame["redeemed_offer_ids"]
        ]
    return frame


def read_offer_facts(
    settings: Settings, offer_ids: list[str], store: Any
) -> pd.DataFrame:
    """Offer features of the ``offers_v1`` service from the online store."""
    from features.repo.definitions import feature_names
    from features.store import online_features

    rows = pd.DataFrame({CARD_KEY: "", OFFER_ID: offer_ids})
    frame = online_features(rows, OFFER_SERVICE, settings, store=store)
    return frame[[OFFER_ID, *feature_names("offer_stats")]].reset_index(drop=True)


def offers_at(settings: Settings, serving_at: str | None) -> pd.Timestamp:
    """When offers are checked for validity: configured, else the data's end.

    The generated and imported warehouses end at a fixed time (``as_of``); batch
    scoring checks offers at that time, and so does the service unless told to use
    the wall clock (``now``) or another instant.
    """
    from features.warehouse import Warehouse

    if serving_at == "now":
        return pd.Timestamp.now(tz="UTC")
    if serving_at:
        return pd.Timestamp(serving_at).tz_convert("UTC")
    return Warehouse(settings.warehouse_dir).as_of()


def load_scorer(settings: Settings, serving: ServingSettings) -> Scorer:
    """Bind the champion models, the online store and the offer catalogue.

    Raises:
        NotReadyError: when a champion, the online store or the warehouse is
            missing.
    """
    from serving.online import OnlineReader, open_serving_store
    from training.evaluation import rule_inputs
    from training.tracking import load_champion

    started = time.perf_counter()
    needs_model, needs_version = load_champion(NEEDS_MODEL, settings)
    offer_model, offer_version = load_champion(OFFER_MODEL, settings)
    store = open_serving_store(settings)

    offers = _offer_table(settings)
    facts = read_offer_facts(settings, offers[OFFER_ID].tolist(), store)
    _, rule_offers = rule_inputs(pd.DataFrame(columns=_RULE_CARD_COLUMNS), facts)
    titles = {
        str(o): (str(t), str(p))
        for o, t, p in offers[[OFFER_ID, "title", "partner"]].itertuples(index=False)
    }

    reader = OnlineReader(store, CARD_SERVICE)
    cache = FeatureCache(
        reader.card_rows, serving.feature_cache_seconds, serving.feature_cache_size
    )
    scorer = Scorer(
        needs_model=needs_model,
        offer_model=offer_model,
        versions={NEEDS_MODEL: needs_version, OFFER_MODEL: offer_version},
        features=cache,
        catalogue=OfferCatalogue(facts, rule_offers, titles),
        secret=settings.secret_bytes,
        at=offers_at(settings, serving.offers_at),
        serving=serving,
    )
    cache.fetch = scorer.compiled.with_propensities(reader.card_rows)
    logger.info(
        "bound needs-model v%s and offer-model v%s in %.1f s",
        needs_version,
        offer_version,
        time.perf_counter() - started,
    )
    return scorer


_RULE_CARD_COLUMNS = [
    CARD_KEY,
    "age",
    "card_status",
    "region",
    "marketing_consent",
    "redeemed_offer_ids",
]


def _offer_table(settings: Settings) -> pd.DataFrame:
    from features.warehouse import Warehouse

    warehouse = Warehouse(settings.warehouse_dir)
    if not warehouse.path("offers").exists():
        raise NotReadyError(
            f"expected the offers table in {settings.warehouse_dir}, found none; "
            "run 'precision warehouse generate' or an import"
        )
    return warehouse.read_table("offers", [OFFER_ID, "title", "partner"])
