"""One training run: both models, their holdout evaluation, and MLflow records.

:func:`train` reads the warehouse and the feature store, fits the needs model and
the offer model on data before the cut-off, evaluates them on the 30 days after it
beside baselines and the oracle, and logs and registers everything in one MLflow
run. The run is marked complete only after every step succeeded; promotion ignores
runs that are not, so a failed or interrupted run never moves an alias.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.feature_tables import build_feature_tables, default_snapshots
from features.schema import (
    CARD_KEY,
    EVENT_TIMESTAMP,
    NEED_CATEGORIES,
    OFFER_ID,
    POST_ID,
)
from features.settings import Settings
from features.warehouse import Warehouse
from training import plots, tracking
from training.baselines import CategoryPriorBaseline, LogisticNeedsBaseline
from training.config import NEEDS_SERVICE, OFFERS_SERVICE, TrainingConfig
from training.datasets import (
    NEEDS,
    LabelSource,
    TimeSplit,
    offers_service_frames,
    point_in_time_features,
    sample_cards,
    sample_keys,
    time_split,
)
from training.evaluation import (
    MODEL,
    ORACLE,
    metric_dict,
    needs_comparison,
    offers_comparison,
    oracle_scored,
    rule_inputs,
    top_k_lists,
)
from training.needs import DEFAULT_DROP_COLUMNS, NeedsModel
from training.offers import (
    FAVOURITE_CATEGORY,
    CandidateStage,
    OfferModel,
    OfferTrainingData,
    RankerWindow,
)
from training.ranker import LambdaRankReranker

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
NEEDS_DROP = (*DEFAULT_DROP_COLUMNS, "redeemed_offer_ids")
FEATURE_SERVICE_VERSION = "v1"
INPUT_EXAMPLE_ROWS = 3
# Seed streams of the run's samples: the same seed draws unrelated samples.
SAMPLE_STREAM_BASELINE = 1
SAMPLE_STREAM_EVALUATION = 2
SAMPLE_STREAM_HOLDOUT = 3
SAMPLE_STREAM_RANKER = 10  # plus the window's number
# Card holders per block when candidate rows are built or scored.
CANDIDATE_BLOCK_CARDS = 5_000
# Card columns the candidate stage and the re-ranker's pair features read; a
# card's other features are the same on all its candidates and never learned from.
WINDOW_CARD_COLUMNS = (CARD_KEY, POST_ID, "age", FAVOURITE_CATEGORY, "region")
SEGMENT_CARD_COLUMNS = (CARD_KEY, POST_ID, "age")


@dataclass
class TrainingResult:
    """What one training run produced.

    Attributes:
        run_id: the MLflow run.
        versions: registered version per model name.
        metrics: every logged metric.
        needs_table: tidy needs metrics (scorer, need_id, metric, value).
        offers_table: tidy offers metrics (scorer, metric, value).
        split: the time split used.
        fingerprint: the warehouse fingerprint.
    """

    run_id: str
    versions: dict[str, str]
    metrics: dict[str, float]
    needs_table: pd.DataFrame
    offers_table: pd.DataFrame
    split: TimeSplit
    fingerprint: str
    needs_model: NeedsModel = field(repr=False)
    offer_model: OfferModel = field(repr=False)


@dataclass
class _Frames:
    """Feature frames shared by the needs and offer stages."""

    needs_train: pd.DataFrame
    needs_holdout: pd.DataFrame
    split: TimeSplit


@dataclass
class _RuleFrames:
    cards: pd.DataFrame
    offers: pd.DataFrame
    card_features: pd.DataFrame
    offer_facts: pd.DataFrame
    propensities: pd.DataFrame


@dataclass
class Evaluation:
    """Both models fitted before the cut-off and their holdout comparison.

    Attributes:
        split: the time split used.
        needs_model: the fitted needs model.
        offer_model: the fitted offer model (candidates refitted up to ``as_of``).
        needs_table: tidy needs metrics (scorer, need_id, metric, value).
        offers_table: tidy offers metrics (scorer, metric, value).
        metrics: the flat metric names logged to MLflow.
        sampled: sizes before and after each seeded sample of the run
            (``sampled.<what>.<available|used>``), logged as MLflow parameters.
    """

    split: TimeSplit
    needs_model: NeedsModel = field(repr=False)
    offer_model: OfferModel = field(repr=False)
    needs_table: pd.DataFrame
    offers_table: pd.DataFrame
    metrics: dict[str, float]
    frames: _Frames = field(repr=False)
    rule_frames: _RuleFrames = field(repr=False)
    sampled: dict[str, int] = field(default_factory=dict)


def train(
    settings: Settings,
    config: TrainingConfig | None = None,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train, evaluate, log and register both models in one MLflow run.

    Args:
        settings: where the warehouse, features and tracking store are.
        config: training configuration; the defaults when omitted.
        progress: called with a short message as each stage starts.

    Returns:
        The run, the registered versions and the holdout metrics.
    """
    config = config or TrainingConfig()
    say = progress or (lambda message: None)
    warehouse = Warehouse(settings.warehouse_dir)
    split = split_for(warehouse, config)
    fingerprint = warehouse.fingerprint()

    client = tracking.use_tracking(settings)
    import mlflow

    with mlflow.start_run(run_name=f"train-{split.cutoff:%Y%m%d}") as run:
        _log_run_header(config, split, fingerprint)
        done = fit_and_evaluate(settings, config, progress)

        say("logging metrics and plots")
        mlflow.log_params({name: str(size) for name, size in done.sampled.items()})
        mlflow.log_metrics(done.metrics)
        _log_tables_and_plots(
            done.needs_table,
            done.offers_table,
            done.needs_model,
            done.offer_model,
            done.frames,
            config,
        )

        say("logging and registering models")
        versions = _log_and_register(
            run.info.run_id,
            done.needs_model,
            done.offer_model,
            done.frames,
            done.rule_frames,
        )
        client.set_tag(run.info.run_id, tracking.TAG_RUN_COMPLETE, "true")

    logger.info("training run %s complete: %s", run.info.run_id, versions)
    return TrainingResult(
        run_id=run.info.run_id,
        versions=versions,
        metrics=done.metrics,
        needs_table=done.needs_table,
        offers_table=done.offers_table,
        split=split,
        fingerprint=fingerprint,
        needs_model=done.needs_model,
        offer_model=done.offer_model,
    )


def split_for(warehouse: Warehouse, config: TrainingConfig) -> TimeSplit:
    """The configured time split of a warehouse."""
    return time_split(
        config.window.resolve_cutoff(warehouse.as_of()),
        config.window.horizon_days,
        config.window.label_windows,
    )


def fit_and_evaluate(
    settings: Settings,
    config: TrainingConfig | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Fit both models before the cut-off and compare them on the holdout.

    Nothing is logged: :func:`train` records the result in MLflow.

    Args:
        settings: where the warehouse and features are.
        config: training configuration; the defaults when omitted.
        progress: called with a short message as each stage starts.

    Returns:
        The fitted models and their holdout metrics beside baselines and oracle.
    """
    config = config or TrainingConfig()
    say = progress or (lambda message: None)
    warehouse = Warehouse(settings.warehouse_dir)
    source = LabelSource(warehouse, settings.secret_bytes)
    split = split_for(warehouse, config)

    say("feature snapshots")
    ensure_snapshots(settings, warehouse, label_times(warehouse, split))

    sampled: dict[str, int] = {}
    say("needs frames")
    frames = _needs_frames(source, settings, config, split, sampled)
    needs_model, needs_table = _train_needs(frames, source, config, say, sampled)

    offer_model, offers_table, rule_frames = _train_offers(
        source, settings, config, split, frames, needs_model, say, sampled
    )
    _report_samples(sampled)
    return Evaluation(
        split=split,
        needs_model=needs_model,
        offer_model=offer_model,
        needs_table=needs_table,
        offers_table=offers_table,
        metrics=metric_dict(needs_table, offers_table, config.k),
        frames=frames,
        rule_frames=rule_frames,
        sampled=sampled,
    )


def _note_sample(sampled: dict[str, int], what: str, available: int, used: int) -> None:
    """Record the size of one seeded sample (``used`` of ``available``)."""
    sampled[f"sampled.{what}.available"] = int(available)
    sampled[f"sampled.{what}.used"] = int(used)


def _report_samples(sampled: dict[str, int]) -> None:
    """Log every sample that left something out."""
    for name, available in sampled.items():
        if not name.endswith(".available"):
            continue
        what = name.removeprefix("sampled.").removesuffix(".available")
        used = sampled[f"sampled.{what}.used"]
        if used < available:
            logger.info("sampled %s: %d of %d (seeded)", what, used, available)


def _log_run_header(config: TrainingConfig, split: TimeSplit, fingerprint: str) -> None:
    import mlflow

    mlflow.log_params(config.flat_params())
    mlflow.set_tags(
        {
            tracking.TAG_FINGERPRINT: fingerprint,
            tracking.TAG_HOLDOUT: split.label,
            tracking.TAG_RUN_COMPLETE: "false",
            "feature_service.needs": NEEDS_SERVICE,
            "feature_service.offers": OFFERS_SERVICE,
            "feature_service.version": FEATURE_SERVICE_VERSION,
            "cutoff": split.cutoff.isoformat(),
        }
    )


def label_times(warehouse: Warehouse, split: TimeSplit) -> list[pd.Timestamp]:
    """Times a training run joins features at: label windows, cut-off, ``as_of``."""
    return [*split.train_times, split.cutoff, warehouse.as_of()]


def training_snapshots(
    warehouse: Warehouse, config: TrainingConfig | None = None
) -> list[pd.Timestamp]:
    """The default monthly snapshots plus every time a training run joins at.

    Feature tables built with these snapshots are not rebuilt by :func:`train`.
    """
    times = label_times(warehouse, split_for(warehouse, config or TrainingConfig()))
    wanted = {pd.Timestamp(t).tz_convert("UTC") for t in times}
    return sorted(set(default_snapshots(warehouse.as_of())) | wanted)


def ensure_snapshots(
    settings: Settings, warehouse: Warehouse, times: list[pd.Timestamp]
) -> None:
    """Rebuild the feature tables when they lack a snapshot at a label time.

    The default monthly snapshots stay, so the online store's latest values do
    not change; the label times are added so that every training row is joined
    to features computed exactly at its own time.
    """
    profile = settings.feature_dir / "card_profile.parquet"
    wanted = {pd.Timestamp(t).tz_convert("UTC") for t in times}
    if profile.exists():
        stored = pd.read_parquet(profile, columns=[EVENT_TIMESTAMP])[EVENT_TIMESTAMP]
        have = set(pd.to_datetime(stored.unique(), utc=True))
        if wanted <= have:
            return
        existing = have
    else:
        existing = set(default_snapshots(warehouse.as_of()))
    snapshots = sorted(existing | wanted)
    logger.info("rebuilding feature tables with %d snapshots", len(snapshots))
    build_feature_tables(
        warehouse, settings.secret_bytes, settings.feature_dir, snapshots
    )


def _needs_frames(
    source: LabelSource,
    settings: Settings,
    config: TrainingConfig,
    split: TimeSplit,
    sampled: dict[str, int],
) -> _Frames:
    """Point-in-time needs features and labels for training and holdout."""
    labels = source.need_labels([*split.train_times, split.cutoff], split.horizon)
    labels = labels.drop(columns=[POST_ID])
    train_rows = labels[labels[EVENT_TIMESTAMP] < split.cutoff]
    available = len(train_rows)
    train_rows = sample_cards(train_rows, config.max_training_cards, config.seed)
    _note_sample(sampled, "needs_training_rows", available, len(train_rows))
    holdout_rows = labels[labels[EVENT_TIMESTAMP] == split.cutoff]
    del labels
    holdout_cards = sample_keys(
        holdout_rows[CARD_KEY],
        config.sampling.holdout_cards,
        config.seed,
        SAMPLE_STREAM_HOLDOUT,
    )
    _note_sample(sampled, "holdout_cards", len(holdout_rows), len(holdout_cards))
    if len(holdout_cards) < len(holdout_rows):
        holdout_rows = holdout_rows[holdout_rows[CARD_KEY].isin(holdout_cards)]

    train = point_in_time_features(
        train_rows.reset_index(drop=True), NEEDS_SERVICE, settings
    )
    holdout = point_in_time_features(
        holdout_rows.reset_index(drop=True), NEEDS_SERVICE, settings
    )
    logger.info("needs: %d training rows, %d holdout rows", len(train), len(holdout))
    return _Frames(needs_train=train, needs_holdout=holdout, split=split)


def _needs_model(config: TrainingConfig) -> NeedsModel:
    """An unfitted needs model with the configured settings."""
    params = config.needs
    return NeedsModel(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        calibration=params.calibration,
        time_column=EVENT_TIMESTAMP,
        drop_columns=NEEDS_DROP,
        random_state=config.seed,
    )


def _split_xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame.drop(columns=list(NEEDS)), frame[list(NEEDS)].astype(int)


def _train_needs(
    frames: _Frames,
    source: LabelSource,
    config: TrainingConfig,
    say: Progress,
    sampled: dict[str, int],
) -> tuple[NeedsModel, pd.DataFrame]:
    """Fit the needs model and its baselines; compare them on the holdout.

    The logistic-regression baseline is fitted on a seeded sample of at most
    ``sampling.baseline_rows`` training rows: its solver's time grows with the
    rows, and a comparison line needs no more.
    """
    X, Y = _split_xy(frames.needs_train)
    X_hold, Y_hold = _split_xy(frames.needs_holdout)
    say("needs model")
    model = _needs_model(config).fit(X, Y)
    say("needs baselines and holdout")
    prior = CategoryPriorBaseline().fit(X, Y)
    rows = _sample_rows(len(X), config.sampling.baseline_rows, config.seed)
    _note_sample(sampled, "baseline_logistic_rows", len(X), len(rows))
    if len(rows) < len(X):
        X, Y = X.iloc[rows], Y.iloc[rows]
    logistic = LogisticNeedsBaseline(drop_columns=NEEDS_DROP).fit(X, Y)
    del X, Y

    scorers = {
        MODEL: model.predict_proba(X_hold),
        "baseline_prior": prior.predict_proba(X_hold),
        "baseline_logistic": logistic.predict_proba(X_hold),
    }
    oracle = source.oracle_needs(frames.split, set(X_hold[CARD_KEY]))
    if oracle is not None:
        keyed = X_hold[[CARD_KEY]].merge(oracle, on=CARD_KEY, how="left")
        keyed.index = X_hold.index
        if keyed[list(NEEDS)].notna().all(axis=None):
            scorers[ORACLE] = keyed[list(NEEDS)]
    return model, needs_comparison(Y_hold, scorers)


def _sample_rows(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Positions of a seeded sample of at most ``limit`` of ``count`` rows, in order."""
    if limit is None or count <= limit:
        return np.arange(count)
    rng = np.random.default_rng([seed, SAMPLE_STREAM_BASELINE])
    return np.sort(rng.choice(count, size=limit, replace=False))


def _train_offers(
    source: LabelSource,
    settings: Settings,
    config: TrainingConfig,
    split: TimeSplit,
    frames: _Frames,
    needs_model: NeedsModel,
    say: Progress,
    sampled: dict[str, int],
) -> tuple[OfferModel, pd.DataFrame, _RuleFrames]:
    """Fit the offer model and compare it with its baselines under the rules."""
    params = config.offers
    catalogue = sorted(source.warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    count = min(params.ranker_windows, len(split.train_times))
    starts = [split.cutoff - split.horizon * i for i in range(1, count + 1)]
    say("offer model: out-of-fold propensities")
    propensities = _out_of_fold_propensities(config, frames.needs_train, starts)
    say("offer model: window frames")
    windows = [
        _ranker_window(
            source,
            settings,
            config,
            catalogue,
            (number, start, propensities.pop(start)),
            split.horizon,
            sampled,
        )
        for number, start in enumerate(starts)
    ]

    cards_cut = sorted(source.cards_at([split.cutoff])[CARD_KEY])
    card_cut, offers_cut = offers_service_frames(
        settings, cards_cut, catalogue, split.cutoff
    )
    latest = windows[0]
    data = OfferTrainingData(
        interactions_t0=latest.interactions,
        labels_t0=latest.labels,
        card_features_t0=latest.card_features,
        propensities_t0=latest.propensities,
        offer_facts_t0=latest.offer_facts,
        interactions=source.interactions_before(split.cutoff, params.event_weights),
        card_features=card_cut,
        offer_facts=offers_cut,
        earlier=windows[1:],
    )
    say("offer model: fit")
    model = _offer_model(config).fit(data)

    say("offer model: holdout evaluation")
    propensities = _propensities(needs_model, frames.needs_holdout)
    cards, offers = rule_inputs(card_cut, offers_cut)
    rule_frames = _RuleFrames(cards, offers, card_cut, offers_cut, propensities)
    table = _evaluate_offers(
        model, source, config, split, rule_frames, catalogue, sampled
    )

    as_of = source.warehouse.as_of()
    if as_of > split.cutoff:
        say("offer model: candidates refit to as_of")
        _refit_to(model, source, settings, config, catalogue, as_of)
    return model, table, rule_frames


def _refit_to(
    model: OfferModel,
    source: LabelSource,
    settings: Settings,
    config: TrainingConfig,
    catalogue: list[str],
    at: pd.Timestamp,
) -> None:
    """Refit the evaluated model's candidate stage on every interaction before ``at``.

    The holdout metrics belong to the model fitted before the cut-off; the model
    that is registered and served also knows the card holders of the holdout
    window, so recently active cards get personal offers instead of cold start.
    """
    cards = sorted(source.cards_at([at])[CARD_KEY])
    card_features, offer_facts = offers_service_frames(settings, cards, catalogue, at)
    card_features = _card_columns(card_features, SEGMENT_CARD_COLUMNS)
    interactions = source.interactions_before(at, config.offers.event_weights)
    model.refit_candidates(interactions, card_features, offer_facts)
    logger.info(
        "offer candidates refitted on %d interactions before %s", len(interactions), at
    )


def _offer_model(config: TrainingConfig) -> OfferModel:
    params = config.offers
    stage = CandidateStage(
        candidate_model=params.candidate_model,
        als_factors=params.als_factors,
        als_iterations=params.als_iterations,
        als_regularization=params.als_regularization,
        als_alpha=params.als_alpha,
        ease_lambda=params.ease_lambda,
        min_history=params.min_history,
        random_state=config.seed,
    )
    ranker = LambdaRankReranker(
        n_estimators=params.ranker_n_estimators,
        learning_rate=params.ranker_learning_rate,
        num_leaves=params.ranker_num_leaves,
        min_child_samples=params.ranker_min_child_samples,
        max_label=2,
        eval_at=config.k,
        random_state=config.seed,
    )
    return OfferModel(n_candidates=params.n_candidates, candidate=stage, ranker=ranker)


def _ranker_window(
    source: LabelSource,
    settings: Settings,
    config: TrainingConfig,
    catalogue: list[str],
    window: tuple[int, pd.Timestamp, pd.DataFrame],
    horizon: pd.Timedelta,
    sampled: dict[str, int],
) -> RankerWindow:
    """State at the window's start and the offer labels of the window after it.

    ``window`` is the window's number, its start and the out-of-fold need
    propensities at the start. The re-ranker learns from the card holders who
    were issued before the start, have propensities and engaged in the window;
    at most ``sampling.ranker_cards`` of them are drawn (seeded, per window). The
    candidate stage still learns from every interaction before the start.
    """
    number, start, propensities = window
    cards = sorted(source.cards_at([start])[CARD_KEY])
    card_features, offer_facts = offers_service_frames(
        settings, cards, catalogue, start
    )
    labels = source.offer_labels(start, horizon)
    eligible = set(labels[CARD_KEY]) & set(cards) & set(propensities[CARD_KEY])
    chosen = sample_keys(
        eligible,
        config.sampling.ranker_cards,
        config.seed,
        SAMPLE_STREAM_RANKER + number,
    )
    _note_sample(sampled, f"ranker_cards.window_{number}", len(eligible), len(chosen))
    if len(chosen) < labels[CARD_KEY].nunique():
        # Only engaged cards get training rows; the others' labels are unused.
        labels = labels[labels[CARD_KEY].isin(chosen)].reset_index(drop=True)
    return RankerWindow(
        interactions=source.interactions_before(start, config.offers.event_weights),
        labels=labels,
        card_features=_card_columns(card_features, WINDOW_CARD_COLUMNS),
        propensities=propensities,
        offer_facts=offer_facts,
    )


def _card_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The named card columns that ``frame`` has, in that order."""
    return frame[[column for column in columns if column in frame.columns]]


def _out_of_fold_propensities(
    config: TrainingConfig, train: pd.DataFrame, times: list[pd.Timestamp]
) -> dict[pd.Timestamp, pd.DataFrame]:
    """Need propensities at each time from a needs model that never saw the card.

    The run's needs model learned from these very label windows, so its
    propensities there are in-sample and sharper than any it gives later. The
    card holders are split in two folds; a model of the same settings fitted on
    one fold scores the other, as the served model scores card holders it has not
    learned from.
    """
    cards = np.array(sorted(train[CARD_KEY].unique()))
    order = np.random.default_rng(config.seed).permutation(len(cards))
    fold_of = pd.Series(order % 2, index=cards)
    fold = train[CARD_KEY].map(fold_of).to_numpy()
    wanted = train[EVENT_TIMESTAMP].isin(times).to_numpy()

    parts = []
    for held_out in (0, 1):
        X, Y = _split_xy(train[fold != held_out].reset_index(drop=True))
        model = _needs_model(config).fit(X, Y)
        rows = train[(fold == held_out) & wanted]
        scored = _propensities(model, rows)
        scored[EVENT_TIMESTAMP] = rows[EVENT_TIMESTAMP].to_numpy()
        parts.append(scored)
    scored = pd.concat(parts, ignore_index=True)
    return {
        time: scored[scored[EVENT_TIMESTAMP] == time]
        .drop(columns=[EVENT_TIMESTAMP])
        .reset_index(drop=True)
        for time in times
    }


def _propensities(model: NeedsModel, features: pd.DataFrame) -> pd.DataFrame:
    """``card_key`` and one propensity column per need for feature rows."""
    if features.empty:
        return pd.DataFrame(columns=[CARD_KEY, *NEEDS])
    scored = model.predict_proba(features.drop(columns=list(NEEDS), errors="ignore"))
    scored.insert(0, CARD_KEY, features[CARD_KEY].to_numpy())
    return scored.reset_index(drop=True)


def _evaluate_offers(
    model: OfferModel,
    source: LabelSource,
    config: TrainingConfig,
    split: TimeSplit,
    frames: _RuleFrames,
    catalogue: list[str],
    sampled: dict[str, int],
) -> pd.DataFrame:
    """Top-k lists of the model, its baselines and the oracle.

    Baselines: the most popular offers, implicit ALS alone and the model's own
    candidate stage alone (both with the same cold-start top-up). Every scorer is
    judged on the same card holders: those with an engagement in the holdout
    among the needs model's holdout cards, or a seeded sample of
    ``sampling.evaluation_cards`` of them.
    """
    relevant = source.offer_labels(split.cutoff, split.horizon)
    engaged = set(relevant[CARD_KEY]) & set(frames.card_features[CARD_KEY])
    engaged &= set(frames.propensities[CARD_KEY])
    cards = sample_keys(
        engaged,
        config.sampling.evaluation_cards,
        config.seed,
        SAMPLE_STREAM_EVALUATION,
    )
    _note_sample(sampled, "offers_evaluation_cards", len(engaged), len(cards))
    card_features = frames.card_features[frames.card_features[CARD_KEY].isin(cards)]
    n = config.offers.n_candidates

    scored = {
        MODEL: _recommend_in_blocks(
            model, cards, card_features, frames.propensities, frames.offer_facts, n
        ),
        "most_popular": _most_popular(model, cards, n),
        "als_alone": _collaborative_alone(
            _als_stage(model, config, frames.card_features), cards, card_features, n
        ),
        "candidates_alone": _collaborative_alone(model.stage_, cards, card_features, n),
    }
    oracle = oracle_scored(source.oracle_offers(split, cards))
    if oracle is not None:
        scored[ORACLE] = oracle[oracle[CARD_KEY].isin(cards)]

    lists = {
        name: top_k_lists(frame, frames.cards, frames.offers, split.cutoff, config.k)
        for name, frame in scored.items()
    }
    return offers_comparison(
        lists, relevant[relevant[CARD_KEY].isin(cards)], catalogue, config.k
    )


def _recommend_in_blocks(
    model: OfferModel,
    cards: list[str],
    card_features: pd.DataFrame,
    propensities: pd.DataFrame,
    offer_facts: pd.DataFrame,
    n: int,
) -> pd.DataFrame:
    """:meth:`OfferModel.recommend` over blocks of card holders, concatenated.

    A card's ranked offers depend on its own rows only, so the result equals one
    call over every card; a block bounds the candidate rows held at once.
    """
    parts = []
    for first in range(0, len(cards), CANDIDATE_BLOCK_CARDS):
        block = cards[first : first + CANDIDATE_BLOCK_CARDS]
        parts.append(
            model.recommend(
                block,
                card_features[card_features[CARD_KEY].isin(block)],
                propensities[propensities[CARD_KEY].isin(block)],
                offer_facts,
                n,
            )
        )
    if not parts:
        return model.recommend([], card_features, propensities, offer_facts, n)
    return pd.concat(parts, ignore_index=True)


def _most_popular(model: OfferModel, cards: list[str], n: int) -> pd.DataFrame:
    """The same most popular offers for every card."""
    top = model.stage_.overall_popularity_.sort_values(ascending=False).head(n)
    return pd.DataFrame(
        {
            CARD_KEY: np.repeat(cards, len(top)),
            OFFER_ID: np.tile(top.index.to_numpy(), len(cards)),
            "score": np.tile(top.to_numpy(), len(cards)),
        }
    )


def _als_stage(
    model: OfferModel, config: TrainingConfig, card_features: pd.DataFrame
) -> CandidateStage:
    """An ALS candidate stage fitted on the same interactions as the model's."""
    params = config.offers
    stage = model.stage_
    offers = np.asarray(stage.offers_, dtype=object)
    interactions = pd.DataFrame(
        {
            CARD_KEY: np.repeat(stage.cards_, stage.history_),
            OFFER_ID: offers[stage.user_items_.indices],
            "weight": stage.user_items_.data,
        }
    )
    return CandidateStage(
        candidate_model="als",
        als_factors=params.als_factors,
        als_iterations=params.als_iterations,
        als_regularization=params.als_regularization,
        als_alpha=params.als_alpha,
        min_history=params.min_history,
        random_state=config.seed,
    ).fit(interactions, card_features, stage.offers_)


def _collaborative_alone(
    stage: CandidateStage, cards: list[str], card_features: pd.DataFrame, n: int
) -> pd.DataFrame:
    """First-stage candidates in their own order, with the cold-start top-up."""
    candidates = stage.candidates(cards, card_features, n)
    return candidates.assign(score=-candidates["candidate_rank"].astype(float))


def _log_tables_and_plots(
    needs_table: pd.DataFrame,
    offers_table: pd.DataFrame,
    needs_model: NeedsModel,
    offer_model: OfferModel,
    frames: _Frames,
    config: TrainingConfig,
) -> None:
    import mlflow

    X_hold, Y_hold = _split_xy(frames.needs_holdout)
    propensities = needs_model.predict_proba(X_hold)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        needs_table.to_csv(out / "needs_metrics.csv", index=False)
        offers_table.to_csv(out / "offers_metrics.csv", index=False)
        plots.write_all(
            out,
            outcomes=Y_hold,
            propensities=propensities,
            needs_table=needs_table,
            offers_table=offers_table,
            needs_importance=needs_model.feature_importances(),
            offers_importance=offer_model.feature_importance(),
            k=config.k,
        )
        mlflow.log_artifacts(str(out), artifact_path="evaluation")


def _log_and_register(
    run_id: str,
    needs_model: NeedsModel,
    offer_model: OfferModel,
    frames: _Frames,
    rule_frames: _RuleFrames,
) -> dict[str, str]:
    """Log both models as pyfunc models, then register them."""
    needs_example = frames.needs_holdout.drop(columns=list(NEEDS)).head(
        INPUT_EXAMPLE_ROWS
    )
    needs_example = needs_example[needs_model.feature_names_]
    needs_uri = tracking.log_fitted_model(needs_model, "needs_model", needs_example)

    offer_example = _offer_input(rule_frames).head(INPUT_EXAMPLE_ROWS)
    offer_uri = tracking.log_fitted_model(offer_model, "offer_model", offer_example)

    return {
        tracking.NEEDS_MODEL: tracking.register(
            needs_uri, tracking.NEEDS_MODEL, run_id
        ),
        tracking.OFFER_MODEL: tracking.register(
            offer_uri, tracking.OFFER_MODEL, run_id
        ),
    }


def _offer_input(frames: _RuleFrames) -> pd.DataFrame:
    """Card features with ``p_<need>`` columns: the offer pyfunc's input."""
    propensities = frames.propensities.rename(
        columns={need: f"p_{need}" for need in NEED_CATEGORIES}
    )
    features = frames.card_features.drop(
        columns=["redeemed_offer_ids"], errors="ignore"
    )
    return features.merge(propensities, on=CARD_KEY, how="inner")
