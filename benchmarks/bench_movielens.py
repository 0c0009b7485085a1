"""Our offer recommender on MovieLens-100k, beside the Microsoft Recommenders table.

Protocol (the Microsoft Recommenders MovieLens benchmark): ratings split 75/25 per
item (each item's ratings shuffled with seed 42, the first 75 % to train), every test
pair relevant whatever its rating, items seen in training removed from the ranking,
k = 10, users present in both the test set and the predictions.

Our model: EASE candidates, re-ranked by LightGBM LambdaRank when that wins on the
training part, with features from it (EASE and ALS ranks, popularity, activity,
genres, demographics, time). The re-ranker learns from cross-fitted folds: the
training part is cut per item into folds, and each fold's ratings label the
candidates of models fitted on the other folds. EASE and ALS settings are chosen on a
validation split carved from the training part with the published per-item protocol;
re-ranker rounds, and re-ranking or not, are chosen fold by fold (a re-ranker trained
on the other folds, judged on the fold's held-out ratings). The test part is scored
once, at the end.

Run ``python -m benchmarks.bench_movielens`` (``--quick`` for the reduced CI setting,
``--json PATH`` to keep the figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from training.ranker import LambdaRankReranker
from training.ranking_metrics import ranking_report
from training.recommenders import (
    ALSRecommender,
    EASERecommender,
    PopularityRecommender,
)

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/movielens-100k"
K = 10
SEED = 42
TRAIN_RATIO = 0.75
DAY = 86_400.0

# Published nDCG@10 of the Microsoft Recommenders MovieLens-100k benchmark.
PUBLISHED_NDCG = {"SAR": 0.394, "BPR": 0.445, "LightGCN": 0.416, "BiVAE": 0.469}

GENRES = [
    "unknown", "action", "adventure", "animation", "children", "comedy", "crime",
    "documentary", "drama", "fantasy", "film_noir", "horror", "musical", "mystery",
    "romance", "sci_fi", "thriller", "war", "western",
]  # fmt: skip


@dataclass(frozen=True)
class BenchSettings:
    """What the run tries; ``quick`` shrinks it for CI."""

    candidates: int
    ease_l2_grid: tuple[float, ...]
    als_grid: tuple[dict[str, Any], ...]
    leaves_grid: tuple[int, ...]
    max_rounds: int
    folds: int
    learning_rate: float = 0.05
    holdout_share: float = 0.5

    @classmethod
    def for_mode(cls, quick: bool) -> BenchSettings:
        if quick:
            return cls(
                candidates=30,
                ease_l2_grid=(400.0,),
                als_grid=({"factors": 64, "regularization": 0.05, "alpha": 5.0},),
                leaves_grid=(15,),
                max_rounds=60,
                folds=2,
                learning_rate=0.1,
            )
        return cls(
            candidates=50,
            ease_l2_grid=(200.0, 400.0, 600.0, 800.0, 1200.0),
            als_grid=tuple(
                {"factors": factors, "regularization": 0.05, "alpha": alpha}
                for factors in (32, 64, 128)
                for alpha in (5.0, 15.0)
            ),
            leaves_grid=(31,),
            max_rounds=400,
            folds=4,
        )


@dataclass
class MovieLens:
    """Ratings, user and item attributes, with 0-based row and column indices."""

    ratings: pd.DataFrame  # user, item, rating, timestamp
    users: pd.DataFrame  # indexed by user: age, gender, occupation
    items: pd.DataFrame  # indexed by item: year, genre columns
    n_users: int
    n_items: int


@dataclass
class History:
    """What the models may see: one training part and the statistics drawn from it."""

    frame: pd.DataFrame
    user_items: sparse.csr_matrix
    stats: dict[str, Any] = field(default_factory=dict)


def load_movielens(folder: Path) -> MovieLens:
    """Read u.data, u.user and u.item; ids become 0-based indices."""
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        names=["user", "item", "rating", "timestamp"],
        dtype={"user": np.int64, "item": np.int64, "rating": np.float64},
    )
    users = pd.read_csv(
        folder / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"]
    )
    items = pd.read_csv(
        folder / "u.item",
        sep="|",
        names=["item", "title", "release", "video", "url", *GENRES],
        encoding="latin-1",
    )

    ratings[["user", "item"]] -= 1
    users["user"] -= 1
    items["item"] -= 1
    users = users.set_index("user")[["age", "gender", "occupation"]]
    items["year"] = pd.to_datetime(items["release"], format="%d-%b-%Y").dt.year
    items = items.set_index("item")[["year", *GENRES]]
    return MovieLens(
        ratings, users, items, int(users.index.max()) + 1, int(items.index.max()) + 1
    )


def stratified_split_by_item(
    ratings: pd.DataFrame, ratio: float = TRAIN_RATIO, seed: int = SEED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-item random split, as Microsoft Recommenders ``python_stratified_split``.

    One uniform draw per row from ``np.random.seed(seed)`` in the frame's order; rows
    sorted by item then draw; a row goes to train when its position within its item
    divided by the item's count is at most ``ratio``.
    """
    np.random.seed(seed)  # the legacy global generator, as the published protocol
    draws = np.random.rand(len(ratings))
    ordered = ratings.assign(_draw=draws).sort_values(["item", "_draw"])

    position = ordered.groupby("item").cumcount() + 1
    count = ordered.groupby("item")["item"].transform("count")
    in_train = (position / count) <= ratio
    ordered = ordered.drop(columns="_draw")
    return ordered[in_train], ordered[~in_train]


def build_history(frame: pd.DataFrame, data: MovieLens) -> History:
    """The interaction matrix (every rating counts as 1) and training statistics."""
    user_items = sparse.csr_matrix(
        (np.ones(len(frame), dtype=np.float32), (frame["user"], frame["item"])),
        shape=(data.n_users, data.n_items),
    )
    history = History(frame=frame, user_items=user_items)
    history.stats = _history_stats(frame, data)
    return history


def relevant_rows(frame: pd.DataFrame, users: np.ndarray, n_items: int) -> Any:
    """Test (or validation) items per user, one row per entry of ``users``."""
    position = pd.Series(np.arange(len(users)), index=users)
    kept = frame[frame["user"].isin(users)]
    rows = position.loc[kept["user"]].to_numpy()
    values = np.ones(len(kept))
    return sparse.csr_matrix(
        (values, (rows, kept["item"].to_numpy())), shape=(len(users), n_items)
    )


def evaluate(
    recommended: np.ndarray, users: np.ndarray, truth: pd.DataFrame, n_items: int
) -> dict[str, float]:
    """Metrics at k over users present in both the predictions and ``truth``."""
    present = np.isin(users, truth["user"].unique())
    relevant = relevant_rows(truth, users[present], n_items)
    return ranking_report(recommended[present], relevant, K)


def warm_users(history: History) -> np.ndarray:
    """Users with at least one training interaction (those we predict for)."""
    return np.flatnonzero(np.diff(history.user_items.indptr) > 0)


def tune_ease(history: History, truth: pd.DataFrame, grid: tuple[float, ...]) -> float:
    """The EASE regularisation with the best validation nDCG@10."""
    users = warm_users(history)
    results = {}
    for l2 in grid:
        model = EASERecommender(l2=l2).fit(history.user_items)
        ids, _ = model.recommend(users, history.user_items, K)
        results[l2] = evaluate(ids, users, truth, history.user_items.shape[1])
        logger.info("EASE l2=%g: validation nDCG@10 %.4f", l2, results[l2]["ndcg@10"])
    return max(results, key=lambda l2: results[l2]["ndcg@10"])


def tune_als(
    history: History, truth: pd.DataFrame, grid: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    """The ALS settings with the best validation nDCG@10."""
    users = warm_users(history)
    best, best_ndcg = grid[0], -1.0
    for settings in grid:
        model = ALSRecommender(**settings, iterations=15, random_state=SEED)
        ids, _ = model.fit(history.user_items).recommend(users, history.user_items, K)
        ndcg = evaluate(ids, users, truth, history.user_items.shape[1])["ndcg@10"]
        logger.info("ALS %s: validation nDCG@10 %.4f", settings, ndcg)
        if ndcg > best_ndcg:
            best, best_ndcg = settings, ndcg
    return best


def candidate_features(
    history: History,
    data: MovieLens,
    ease: EASERecommender,
    als: ALSRecommender,
    n_candidates: int,
) -> pd.DataFrame:
    """EASE's top candidates per warm user, with every re-ranker feature."""
    users = warm_users(history)
    ids, scores = ease.recommend(users, history.user_items, n_candidates)
    frame = pd.DataFrame(
        {
            "user": np.repeat(users, n_candidates),
            "item": ids.ravel(),
            "ease_score": scores.ravel(),
            "ease_rank": np.tile(np.arange(1, n_candidates + 1), len(users)),
        }
    )
    frame = frame[frame["item"] >= 0].reset_index(drop=True)
    top = frame.groupby("user")["ease_score"].transform("max")
    frame["ease_relative"] = frame["ease_score"] / top.where(top > 0, 1.0)
    frame["ease_gap"] = top - frame["ease_score"]

    frame["als_score"] = als.score_items(
        frame["user"].to_numpy(), frame["item"].to_numpy(), history.user_items
    )
    frame["als_rank"] = frame.groupby("user")["als_score"].rank(ascending=False)
    return _add_context_features(frame, history, data)


# Raw EASE and ALS scores are left out: their scale grows with the history a model is
# fitted on, so values learned on cross-fitted folds do not carry over to the final
# fit (ranks and per-user relative scores do).
FEATURES = [
    "ease_rank", "ease_relative", "als_rank",
    "item_popularity_pct", "item_mean_rating", "user_activity_pct", "user_mean_rating",
    "genre_match", "age", "is_female", "occupation", "rater_age_gap",
    "rater_same_gender", "year", "item_user_time_gap", "item_first_after_user",
    "item_share_in_user_window",
]  # fmt: skip


def _history_stats(frame: pd.DataFrame, data: MovieLens) -> dict[str, Any]:
    """Per-user and per-item statistics drawn from one training part only."""
    by_item = frame.groupby("item")
    by_user = frame.groupby("user")
    item_counts = by_item.size().reindex(range(data.n_items), fill_value=0)
    user_counts = by_user.size().reindex(range(data.n_users), fill_value=0)

    genres = data.items[GENRES].to_numpy(dtype=np.float64)
    profile = np.zeros((data.n_users, len(GENRES)))
    np.add.at(profile, frame["user"].to_numpy(), genres[frame["item"].to_numpy()])
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)

    raters = frame.join(data.users, on="user")
    return {
        "item_popularity_pct": item_counts.rank(pct=True).to_numpy(),
        "user_activity_pct": user_counts.rank(pct=True).to_numpy(),
        "item_mean_rating": by_item["rating"].mean(),
        "user_mean_rating": by_user["rating"].mean(),
        "genre_profile": profile,
        "rater_mean_age": raters.groupby("item")["age"].mean(),
        "rater_female_share": (raters["gender"] == "F").groupby(raters["item"]).mean(),
        "item_median_time": by_item["timestamp"].median(),
        "item_first_time": by_item["timestamp"].min(),
        "user_median_time": by_user["timestamp"].median(),
        "user_first_time": by_user["timestamp"].min(),
        "user_last_time": by_user["timestamp"].max(),
        "item_times": {
            item: np.sort(times.to_numpy()) for item, times in by_item["timestamp"]
        },
    }


def _add_context_features(
    frame: pd.DataFrame, history: History, data: MovieLens
) -> pd.DataFrame:
    """Popularity, activity, taste, demographic and time features per candidate."""
    stats = history.stats
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()

    frame["item_popularity_pct"] = stats["item_popularity_pct"][items]
    frame["user_activity_pct"] = stats["user_activity_pct"][users]
    frame["item_mean_rating"] = stats["item_mean_rating"].reindex(items).to_numpy()
    frame["user_mean_rating"] = stats["user_mean_rating"].reindex(users).to_numpy()

    item_genres = data.items[GENRES].to_numpy(dtype=np.float64)[items]
    item_genres /= np.maximum(np.linalg.norm(item_genres, axis=1, keepdims=True), 1e-9)
    frame["genre_match"] = (stats["genre_profile"][users] * item_genres).sum(axis=1)

    people = data.users.reindex(users)
    frame["age"] = people["age"].to_numpy()
    frame["is_female"] = (people["gender"] == "F").to_numpy(dtype=float)
    frame["occupation"] = pd.Categorical(
        people["occupation"].to_numpy(),
        categories=sorted(data.users["occupation"].unique()),
    )
    frame["rater_age_gap"] = np.abs(
        stats["rater_mean_age"].reindex(items).to_numpy() - frame["age"].to_numpy()
    )
    female_share = stats["rater_female_share"].reindex(items).to_numpy()
    frame["rater_same_gender"] = np.where(
        frame["is_female"] == 1.0, female_share, 1.0 - female_share
    )
    frame["year"] = data.items["year"].reindex(items).to_numpy()
    return _add_time_features(frame, stats)


def _add_time_features(frame: pd.DataFrame, stats: dict[str, Any]) -> pd.DataFrame:
    """How the item's training ratings sit in time against the user's own ratings."""
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    user_first = stats["user_first_time"].reindex(users).to_numpy()
    user_last = stats["user_last_time"].reindex(users).to_numpy()

    frame["item_user_time_gap"] = (
        stats["item_median_time"].reindex(items).to_numpy()
        - stats["user_median_time"].reindex(users).to_numpy()
    ) / DAY
    frame["item_first_after_user"] = (
        stats["item_first_time"].reindex(items).to_numpy() - user_last
    ) / DAY

    share = np.full(len(frame), np.nan)
    for item, rows in pd.Series(np.arange(len(frame))).groupby(items):
        times = stats["item_times"].get(item)
        if times is None:
            continue
        inside = np.searchsorted(
            times, user_last[rows], side="right"
        ) - np.searchsorted(times, user_first[rows], side="left")
        share[rows] = inside / len(times)
    frame["item_share_in_user_window"] = share
    return frame


def rerank(frame: pd.DataFrame, scores: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Top k items per user by re-ranker score; -1 pads short lists.

    Trees give equal scores to many candidates; ties keep the candidate order.
    """
    ranked = frame[["user", "item", "ease_rank"]].assign(score=np.asarray(scores))
    ranked = ranked.sort_values(
        ["user", "score", "ease_rank"], ascending=[True, False, True]
    )
    ranked = ranked.groupby("user").head(K)
    ranked["slot"] = ranked.groupby("user").cumcount()

    top = np.full((len(users), K), -1, dtype=np.int64)
    row_of_user = pd.Series(np.arange(len(users)), index=users)
    top[row_of_user.loc[ranked["user"]].to_numpy(), ranked["slot"].to_numpy()] = ranked[
        "item"
    ].to_numpy()
    return top


def fold_of_rating(ratings: pd.DataFrame, n_folds: int, seed: int = SEED) -> np.ndarray:
    """A fold per rating, dealt round-robin within each item after a seeded shuffle.

    Each fold holds about ``1 / n_folds`` of every item's ratings, so a fold held out
    from training looks like the published per-item test part.
    """
    draws = np.random.default_rng(seed).random(len(ratings))
    ranks = (
        pd.Series(draws)
        .groupby(ratings["item"].to_numpy())
        .rank(method="first")
        .to_numpy()
        .astype(np.int64)
    )
    return (ranks - 1) % n_folds


def stacked_frame(
    ratings: pd.DataFrame,
    data: MovieLens,
    l2: float,
    als_settings: dict[str, Any],
    settings: BenchSettings,
) -> pd.DataFrame:
    """Cross-fitted re-ranker rows, each fold's candidates labelled by that fold.

    For every fold, the candidate models are fitted on the other folds and each
    user's candidates are labelled 1 when the user rated the item in the held-out
    fold. Every user appears once per fold, as its own query (``query``).
    """
    folds = fold_of_rating(ratings, settings.folds)
    parts = []
    for fold in range(settings.folds):
        kept, held_out = ratings[folds != fold], ratings[folds == fold]
        history = build_history(kept, data)
        ease = EASERecommender(l2=l2).fit(history.user_items)
        als = ALSRecommender(**als_settings, random_state=SEED).fit(history.user_items)
        frame = candidate_features(history, data, ease, als, settings.candidates)
        frame["label"] = _labels(frame, held_out)
        frame["query"] = frame["user"] + fold * data.n_users
        frame["fold"] = fold
        parts.append(frame)
        logger.info(
            "stacking fold %d: %d rows, %d positives",
            fold,
            len(frame),
            int(frame["label"].sum()),
        )
    return pd.concat(parts, ignore_index=True)


def split_queries(users: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Users for early stopping and users held out for judging, at random."""
    rng = np.random.default_rng(SEED)
    held_out = rng.random(len(users)) < share
    return users[~held_out], users[held_out]


def choose_reranker(
    stacked: pd.DataFrame,
    ratings: pd.DataFrame,
    settings: BenchSettings,
    n_items: int,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Pick leaves and rounds, and whether to re-rank at all, across the folds.

    For each fold in turn, a re-ranker learns from the other folds' rows; half the
    fold's users stop its boosting early and the other half judge it against the
    EASE order, on the fold's held-out ratings. Scores are means over the folds.
    """
    # Optimistic: folds miss the shift from fold-sized to full-sized histories.
    folds = fold_of_rating(ratings, settings.folds)
    scores: dict[str, float] = {"ease": 0.0}
    best: dict[str, Any] = {}
    for leaves in settings.leaves_grid:
        ndcgs, rounds = [], []
        for fold in range(settings.folds):
            truth = ratings[folds == fold]
            ease_ndcg, ndcg, best_round = _judge_fold(
                stacked, truth, fold, leaves, settings, n_items
            )
            scores["ease"] += ease_ndcg / (settings.folds * len(settings.leaves_grid))
            ndcgs.append(ndcg)
            rounds.append(best_round)
        scores[f"leaves={leaves}"] = float(np.mean(ndcgs))
        logger.info(
            "re-ranker leaves=%d rounds=%s: cross-fitted nDCG@10 %.4f",
            leaves,
            rounds,
            scores[f"leaves={leaves}"],
        )
        if not best or scores[f"leaves={leaves}"] > best["ndcg"]:
            best = {
                "leaves": leaves,
                "rounds": int(np.median(rounds)),
                "ndcg": scores[f"leaves={leaves}"],
            }
    logger.info("EASE order: cross-fitted nDCG@10 %.4f", scores["ease"])
    return best, scores


def _judge_fold(
    stacked: pd.DataFrame,
    truth: pd.DataFrame,
    fold: int,
    leaves: int,
    settings: BenchSettings,
    n_items: int,
) -> tuple[float, float, int]:
    """EASE and re-ranker nDCG@10 on one fold, the re-ranker trained on the others.

    Returns:
        The EASE order's nDCG, the re-ranker's nDCG and its early-stopped rounds.
    """
    inside = stacked[stacked["fold"] == fold]
    others = stacked[stacked["fold"] != fold]
    users = np.intersect1d(inside["user"].unique(), truth["user"].unique())
    stop_users, held_users = split_queries(users, settings.holdout_share)
    stop = inside[inside["user"].isin(stop_users)]
    held = inside[inside["user"].isin(held_users)]

    ranker = _ranker(settings, leaves, settings.max_rounds).fit(
        others[FEATURES],
        others["label"],
        others["query"],
        validation=(stop[FEATURES], stop["label"], stop["query"]),
    )

    baseline = rerank(held, -held["ease_rank"], held_users)
    top = rerank(held, ranker.predict(held), held_users)
    return (
        evaluate(baseline, held_users, truth, n_items)["ndcg@10"],
        evaluate(top, held_users, truth, n_items)["ndcg@10"],
        ranker.best_iteration_,
    )


def _labels(frame: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """1 when the candidate is in ``truth`` for that user, else 0."""
    keys = pd.MultiIndex.from_frame(truth[["user", "item"]])
    return pd.MultiIndex.from_frame(frame[["user", "item"]]).isin(keys).astype(int)


def _ranker(settings: BenchSettings, leaves: int, rounds: int) -> LambdaRankReranker:
    return LambdaRankReranker(
        n_estimators=rounds,
        learning_rate=settings.learning_rate,
        num_leaves=leaves,
        min_child_samples=100,
        feature_fraction=0.7,
        lambda_l2=5.0,
        max_label=1,
        eval_at=K,
        early_stopping_rounds=50,
        random_state=SEED,
        num_threads=2,
        # A better EASE rank never lowers the score: keeps trees from fitting noise.
        params={
            "monotone_constraints": [-1 if f == "ease_rank" else 0 for f in FEATURES]
        },
    )


def run(folder: Path, quick: bool) -> dict[str, Any]:
    """The whole benchmark: tune inside the training part, score the test part once."""
    started = time.perf_counter()
    settings = BenchSettings.for_mode(quick)
    data = load_movielens(folder)
    train, test = stratified_split_by_item(data.ratings)
    inner, validation = stratified_split_by_item(train)
    inner_history = build_history(inner, data)

    l2 = tune_ease(inner_history, validation, settings.ease_l2_grid)
    als_settings = tune_als(inner_history, validation, settings.als_grid)
    stacked = stacked_frame(train, data, l2, als_settings, settings)
    best, selection_scores = choose_reranker(stacked, train, settings, data.n_items)
    ranker = _ranker(settings, best["leaves"], best["rounds"]).fit(
        stacked[FEATURES], stacked["label"], stacked["query"]
    )

    use_reranker = best["ndcg"] > selection_scores["ease"]
    history = build_history(train, data)
    rows = _test_rows(history, data, test, l2, als_settings, settings, ranker)
    final = "EASE + LambdaRank" if use_reranker else "EASE"
    rows[f"final, chosen in the training part: {final}"] = rows[final]
    return {
        "mode": "quick" if quick else "full",
        "split": {
            "train": len(train),
            "test": len(test),
            "validation": len(validation),
        },
        "chosen": {
            "ease_l2": l2,
            "als": als_settings,
            "reranker": best,
            "final": final,
        },
        "selection_ndcg": selection_scores,
        "rows": rows,
        "published_ndcg": PUBLISHED_NDCG,
        "seconds": time.perf_counter() - started,
    }


def _test_rows(
    history: History,
    data: MovieLens,
    test: pd.DataFrame,
    l2: float,
    als_settings: dict[str, Any],
    settings: BenchSettings,
    ranker: LambdaRankReranker,
) -> dict[str, dict[str, float]]:
    """Fit every model on the full training part and score the test part once."""
    users = warm_users(history)
    matrix = history.user_items

    popularity = PopularityRecommender().fit(matrix)
    als = ALSRecommender(**als_settings, random_state=SEED).fit(matrix)
    ease = EASERecommender(l2=l2).fit(matrix)
    rows = {}
    for name, model in (("most popular", popularity), ("ALS", als), ("EASE", ease)):
        ids, _ = model.recommend(users, matrix, K)
        rows[name] = evaluate(ids, users, test, data.n_items)

    frame = candidate_features(history, data, ease, als, settings.candidates)
    top = rerank(frame, ranker.predict(frame), users)
    rows["EASE + LambdaRank"] = evaluate(top, users, test, data.n_items)
    return rows


def format_table(result: dict[str, Any]) -> str:
    """Our rows and the published rows, one line each."""
    header = (
        f"{'model':<56}{'nDCG@10':>9}{'P@10':>8}{'R@10':>8}"
        f"{'MAP(MS)':>9}{'MAP@10':>8}{'HR@10':>8}{'cov':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, metrics in result["rows"].items():
        lines.append(
            f"{name:<56}{metrics['ndcg@10']:>9.3f}{metrics['precision@10']:>8.3f}"
            f"{metrics['recall@10']:>8.3f}{metrics['map_by_relevant@10']:>9.3f}"
            f"{metrics['map@10']:>8.3f}{metrics['hit_rate@10']:>8.3f}"
            f"{metrics['coverage@10']:>7.3f}"
        )
    for name, ndcg in result["published_ndcg"].items():
        lines.append(f"{name + ' (published)':<56}{ndcg:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: run, print the table and the time, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="reduced CI setting")
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    parser.add_argument("--verbose", action="store_true", help="log tuning steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    result = run(args.data, args.quick)
    print(f"MovieLens-100k, Microsoft Recommenders protocol ({result['mode']} mode)")
    print(f"split: {result['split']}")
    print(f"chosen in the training part: {result['chosen']}")
    print(format_table(result))
    users = int(result["rows"]["EASE"]["users"])
    print(
        f"users evaluated: {users}; MAP(MS) divides by relevant, MAP@10 by min(rel, k)"
    )
    print(f"time: {result['seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
