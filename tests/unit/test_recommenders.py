"""Contract and behaviour tests for the candidate generators."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from features.errors import InputError
from training.recommenders import (
    ALSRecommender,
    BlendRecommender,
    ColdStartError,
    EASERecommender,
    PopularityRecommender,
    RP3betaRecommender,
    has_history,
)

N_USERS, N_ITEMS, BLOCK = 20, 10, 5


def two_taste_user_items() -> sparse.csr_matrix:
    """Two groups of users with disjoint tastes, each user missing one item.

    Users 0-9 like items 0-4 and users 10-19 like items 5-9; user ``u`` lacks item
    ``u % 5`` of its own block, so that item is the one right answer for it.
    """
    rows, cols = [], []
    for user in range(N_USERS):
        first = 0 if user < 10 else BLOCK
        for item in range(first, first + BLOCK):
            if item != first + user % BLOCK:
                rows.append(user)
                cols.append(item)
    values = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((values, (rows, cols)), shape=(N_USERS, N_ITEMS))


def missing_item(user: int) -> int:
    return (0 if user < 10 else BLOCK) + user % BLOCK


def make_als() -> ALSRecommender:
    return ALSRecommender(factors=2, regularization=0.1, iterations=15, num_threads=1)


def make_blend() -> BlendRecommender:
    return BlendRecommender([make_als(), EASERecommender(l2=1.0)], weights=[0.5, 0.5])


FACTORIES = {
    "popularity": PopularityRecommender,
    "als": make_als,
    "ease": lambda: EASERecommender(l2=1.0),
    "rp3beta": lambda: RP3betaRecommender(alpha=0.8, beta=0.3),
    "blend": make_blend,
}
PERSONALISED = ["als", "ease", "rp3beta", "blend"]


@pytest.fixture(params=list(FACTORIES), ids=list(FACTORIES))
def recommender_factory(request):
    return FACTORIES[request.param]


def test_recommender_contract(recommender_factory) -> None:
    user_items = two_taste_user_items()
    users = np.arange(N_USERS)

    model = recommender_factory().fit(user_items)
    ids, scores = model.recommend(users, user_items, n=3)
    again_ids, again_scores = (
        recommender_factory().fit(user_items).recommend(users, user_items, n=3)
    )

    assert ids.shape == scores.shape == (N_USERS, 3)
    assert not np.isnan(scores).any()
    for user in users:
        assert not set(ids[user]) & set(user_items[user].indices)
    np.testing.assert_array_equal(ids, again_ids)
    np.testing.assert_allclose(scores, again_scores)
    for name, value in vars(model).items():
        if (
            name.endswith("_")
            and isinstance(value, np.ndarray)
            and value.dtype.kind == "f"
        ):
            assert np.isfinite(value).all(), name


def test_recommender_pads_when_fewer_items_are_left(recommender_factory) -> None:
    user_items = two_taste_user_items()

    model = recommender_factory().fit(user_items)
    ids, scores = model.recommend(np.array([0]), user_items, n=N_ITEMS)

    # user 0 has seen 4 items, so 6 are left and 4 slots stay empty
    assert (ids[0, :6] >= 0).all()
    assert (ids[0, 6:] == -1).all()
    assert np.isnan(scores[0, 6:]).all()


def test_recommender_without_filter_may_return_seen_items(recommender_factory) -> None:
    user_items = two_taste_user_items()

    model = recommender_factory().fit(user_items)
    ids, _ = model.recommend(
        np.array([0]), user_items, n=N_ITEMS, filter_already_liked=False
    )

    assert sorted(ids[0]) == list(range(N_ITEMS))


@pytest.mark.parametrize("name", PERSONALISED)
def test_personalised_recommenders_find_the_missing_item_of_each_taste(name) -> None:
    user_items = two_taste_user_items()
    users = np.arange(N_USERS)

    ids, _ = FACTORIES[name]().fit(user_items).recommend(users, user_items, n=1)

    np.testing.assert_array_equal(ids[:, 0], [missing_item(user) for user in users])


def test_popularity_ranks_by_number_of_users() -> None:
    user_items = sparse.csr_matrix(
        np.array([[1, 5, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    )

    model = PopularityRecommender().fit(user_items)
    ids, scores = model.recommend(np.array([3, 0]), user_items, n=2)

    np.testing.assert_array_equal(ids, [[0, 2], [2, 3]])
    np.testing.assert_array_equal(scores, [[3, 2], [2, 0]])


def test_weighted_popularity_sums_weights() -> None:
    user_items = sparse.csr_matrix(np.array([[1, 5, 0], [1, 0, 1], [1, 0, 1]]))

    model = PopularityRecommender(binary=False).fit(user_items)
    ids, _ = model.recommend(np.array([2]), user_items, n=1, filter_already_liked=False)

    assert ids[0, 0] == 1


@pytest.mark.parametrize("name", PERSONALISED)
def test_score_items_matches_recommend_scores(name) -> None:
    user_items = two_taste_user_items()
    users = np.array([0, 7, 12])

    model = FACTORIES[name]().fit(user_items)
    ids, scores = model.recommend(users, user_items, n=4)
    pair_scores = model.score_items(np.repeat(users, 4), ids.ravel())

    np.testing.assert_allclose(pair_scores, scores.ravel(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PERSONALISED)
def test_user_without_interactions_gets_no_personalised_output(name) -> None:
    user_items = two_taste_user_items().tolil()
    user_items[3, :] = 0
    user_items = user_items.tocsr()
    user_items.eliminate_zeros()

    model = FACTORIES[name]().fit(user_items)

    with pytest.raises(ColdStartError, match=r"1 user\(s\).*rows 3.*cold-start path"):
        model.recommend(np.array([2, 3]), user_items, n=2)
    with pytest.raises(ColdStartError, match="rows 3"):
        model.score_items(np.array([3]), np.array([0]))
    np.testing.assert_array_equal(
        has_history(np.array([2, 3]), user_items), [True, False]
    )


def test_popularity_serves_users_without_interactions() -> None:
    user_items = two_taste_user_items()
    empty = sparse.csr_matrix((1, N_ITEMS), dtype=np.float32)

    model = PopularityRecommender().fit(user_items)
    ids, _ = model.recommend(np.array([0]), empty, n=3)

    assert (ids >= 0).all()


def test_als_refuses_a_user_unknown_at_fit_time() -> None:
    user_items = two_taste_user_items()
    grown = sparse.vstack([user_items, user_items[:1]]).tocsr()

    model = make_als().fit(user_items)

    with pytest.raises(ColdStartError, match="rows 20"):
        model.recommend(np.array([20]), grown, n=2)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_csc_matrix_is_refused_by_fit_and_recommend(name) -> None:
    user_items = two_taste_user_items()

    with pytest.raises(InputError, match=r"CSR matrix.*got 'csc'"):
        FACTORIES[name]().fit(user_items.T)
    model = FACTORIES[name]().fit(user_items)
    with pytest.raises(InputError, match=r"CSR matrix.*got 'csc'"):
        model.recommend(np.array([0]), user_items.tocsc(), n=2)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_transposed_matrix_is_refused_at_recommend(name) -> None:
    user_items = two_taste_user_items()

    model = FACTORIES[name]().fit(user_items)

    with pytest.raises(InputError, match=r"10 item columns.*got shape \(10, 20\)"):
        model.recommend(np.array([0]), user_items.T.tocsr(), n=2)


def test_dense_array_is_refused() -> None:
    with pytest.raises(InputError, match="got 'ndarray'"):
        EASERecommender().fit(two_taste_user_items().toarray())


def test_negative_weights_are_refused() -> None:
    user_items = two_taste_user_items()
    user_items.data[0] = -1.0

    with pytest.raises(InputError, match="1 negative values"):
        make_als().fit(user_items)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (ALSRecommender(factors=0), "factors must be a positive integer"),
        (ALSRecommender(alpha=0.0), "alpha must be a positive number"),
        (EASERecommender(l2=0), "l2 must be a positive number"),
        (RP3betaRecommender(alpha=0), "alpha must be a positive number"),
        (RP3betaRecommender(beta=-1.0), "beta must be a non-negative number"),
        (BlendRecommender([EASERecommender()], [1.0, 2.0]), "equal length"),
    ],
    ids=[
        "als-factors",
        "als-alpha",
        "ease-l2",
        "rp3beta-alpha",
        "rp3beta-beta",
        "blend-weights",
    ],
)
def test_bad_parameters_are_refused_at_fit(model, message) -> None:
    with pytest.raises(InputError, match=message):
        model.fit(two_taste_user_items())


def test_unfitted_recommender_refuses_to_recommend() -> None:
    with pytest.raises(InputError, match="must be fitted"):
        EASERecommender().recommend(np.array([0]), two_taste_user_items(), n=1)


def test_out_of_range_users_and_items_are_refused() -> None:
    user_items = two_taste_user_items()
    model = EASERecommender(l2=1.0).fit(user_items)

    with pytest.raises(InputError, match=r"user_ids must lie in \[0, 20\)"):
        model.recommend(np.array([25]), user_items, n=1)
    with pytest.raises(InputError, match=r"item_ids must lie in \[0, 10\)"):
        model.score_items(np.array([0]), np.array([10]))
