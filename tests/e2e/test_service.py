"""The real service, end to end: the main job builds a small data folder, then
``bentoml serve`` answers on a free loopback port and every endpoint is called.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.cards import pseudonym
from features.settings import Settings
from serving.cli import serve_command, service_environment, wait_until_ready
from tests.bench.quick import run_quick_mode

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_CARDS = 600
READY_SECONDS = 150.0
K = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder built by the main job itself (``precision demo --no-serve``).

    ``PRECISION_E2E_DATA_DIR`` points at a folder such a run already built, to rerun
    the service checks without rebuilding.
    """
    if prebuilt := os.environ.get("PRECISION_E2E_DATA_DIR"):
        return Path(prebuilt)
    folder = tmp_path_factory.mktemp("e2e-data")
    env = service_environment() | {"PRECISION_DATA_DIR": str(folder)}
    env.pop("PRECISION_PSEUDONYM_SECRET", None)
    command = [sys.executable, "-m", "precision_cli", "demo", "--no-serve"]
    command += ["--cards", str(DEMO_CARDS)]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "notification" in done.stdout
    return folder


@pytest.fixture(scope="module")
def keys(data_dir: Path) -> dict[str, str]:
    """One fresh key per role, created with the key command."""
    env = service_environment() | {"PRECISION_DATA_DIR": str(data_dir)}
    created = {}
    for role in ("notification", "campaign", "admin"):
        done = subprocess.run(
            [sys.executable, "-m", "precision_cli", "keys", "create", "--role", role],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        created[role] = done.stdout.strip().splitlines()[-1]
    return created


@pytest.fixture(scope="module")
def service(data_dir: Path, keys: dict[str, str]) -> Iterator[httpx.Client]:
    """``bentoml serve`` on a free loopback port; stopped after the module."""
    port = free_port()
    env = service_environment() | {"PRECISION_DATA_DIR": str(data_dir)}
    log = (data_dir / "service.log").open("wb")
    process = subprocess.Popen(
        serve_command("127.0.0.1", port), env=env, stdout=log, stderr=log
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until_ready(process, base_url, READY_SECONDS)
        if not ready:
            log.flush()
            pytest.fail((data_dir / "service.log").read_text()[-4000:])
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def batch(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Card numbers with their pseudonyms, and the offline batch scores."""
    settings = Settings(data_dir=data_dir)
    cards = pd.read_parquet(
        data_dir / "warehouse" / "card_holders.parquet", columns=["card_number"]
    )
    cards["card_key"] = [pseudonym(c, settings.secret_bytes) for c in cards.card_number]
    propensities = pd.read_parquet(data_dir / "scores" / "propensities.parquet")
    top = pd.read_parquet(data_dir / "scores" / "top_offers.parquet")
    return cards, propensities, top


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_health_info_and_metrics(service: httpx.Client) -> None:
    assert service.get("/livez").status_code == 200
    assert service.get("/readyz").status_code == 200
    info = service.get("/info").json()
    assert info["ready"] is True
    assert set(info["model_versions"]) == {"needs-model", "offer-model"}
    assert info["feature_services"] == {"needs": "needs_v1", "offers": "offers_v1"}
    metrics = service.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text


def test_recommend_matches_the_offline_batch_scores(service, keys, batch) -> None:
    cards, _, top = batch
    with_offers = cards[cards.card_key.isin(top.card_key)].head(25)

    body = {"cards": with_offers.card_number.tolist(), "k": K}
    response = service.post("/recommend", json=body, headers=auth(keys["notification"]))

    assert response.status_code == 200
    payload = response.json()
    assert set(payload["model_versions"]) == {"needs-model", "offer-model"}
    for card, result in zip(with_offers.itertuples(), payload["results"], strict=True):
        assert result["card_number"] == card.card_number
        offline = top[top.card_key == card.card_key].sort_values("rank")
        served = result["offers"]
        assert [o["offer_id"] for o in served] == offline.offer_id.tolist()
        assert [o["score"] for o in served] == pytest.approx(
            offline.score.tolist(), abs=1e-5
        )
        assert all(o["reason"] for o in served)


def test_needs_match_the_offline_batch_propensities(service, keys, batch) -> None:
    cards, propensities, _ = batch
    chosen = cards.merge(propensities, on="card_key").head(10)

    body = {"cards": chosen.card_number.tolist()}
    response = service.post("/needs", json=body, headers=auth(keys["admin"]))

    assert response.status_code == 200
    for row, result in zip(
        chosen.itertuples(), response.json()["results"], strict=True
    ):
        if result["status"] == "no_consent":
            continue
        values = [n["propensity"] for n in result["needs"]]
        assert values == sorted(values, reverse=True)
        for need in result["needs"]:
            assert need["propensity"] == pytest.approx(
                getattr(row, f"p_{need['need_id']}"), abs=1e-5
            )


def test_one_bad_card_never_fails_the_batch(service, keys, batch) -> None:
    cards, _, _ = batch
    number = cards.card_number.iloc[0]
    as_integer = int(number)
    body = {"cards": [number, "12-ab", None, {"x": 1}, as_integer, "9999999999"]}

    response = service.post("/recommend", json=body, headers=auth(keys["admin"]))

    assert response.status_code == 200
    results = response.json()["results"]
    statuses = [r["status"] for r in results]
    assert statuses[1:4] == ["invalid"] * 3
    assert results[4]["card_number"] == number  # a JSON number is padded back
    assert statuses[4] == statuses[0]
    assert statuses[5] == "cold_start"


def test_segment_preview_hides_small_counts(service, keys, batch) -> None:
    _, propensities, _ = batch
    sizes = propensities.groupby(["post_id", "language"]).size()
    post, language = sizes[(sizes > 0) & (sizes < K)].index[0]

    small = {"filters": {"post_id": [post], "language": [language]}}
    response = service.post(
        "/segments/preview", json=small, headers=auth(keys["campaign"])
    )

    assert response.status_code == 200
    assert response.json()["size"] == f"fewer than {K}"
    assert response.json()["best_offers"] == []

    whole = service.post(
        "/segments/preview", json={"filters": {}}, headers=auth(keys["campaign"])
    ).json()
    assert whole["size"] == len(propensities)
    cells = [c["count"] for c in whole["breakdowns"]["language"]]
    hidden = [c for c in cells if not isinstance(c, int)]
    assert len(hidden) != 1  # one hidden cell could be worked out from the total
    for card_key in propensities.card_key.head(20):
        assert card_key not in str(whole)


def test_access_rules(service, keys) -> None:
    body = {"cards": ["0000000001"]}
    assert service.post("/recommend", json=body).status_code == 401
    assert (
        service.post("/recommend", json=body, headers=auth("pk_x")).status_code == 401
    )
    forbidden = service.post("/recommend", json=body, headers=auth(keys["campaign"]))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "forbidden"
    reload = service.post("/admin/reload", headers=auth(keys["notification"]))
    assert reload.status_code == 403
    assert service.post("/admin/reload", headers=auth(keys["admin"])).status_code == 200


def test_bad_bodies_get_4xx_never_500(service, keys) -> None:
    bad = [
        {"cards": []},
        {"cards": ["1"], "k": 0},
        {"cards": ["1"], "k": 51},
        {"cards": ["1"], "unknown": 1},
        {"cards": [f"{i:010d}" for i in range(1001)]},
    ]
    for body in bad:
        response = service.post(
            "/recommend", json=body, headers=auth(keys["notification"])
        )
        assert 400 <= response.status_code < 500, body
    garbage = service.post(
        "/needs",
        content=b"\x00not json",
        headers=auth(keys["notification"]) | {"Content-Type": "application/json"},
    )
    assert garbage.status_code == 422


def test_segment_page_is_served(service) -> None:
    page = service.get("/segments")
    assert page.status_code == 200
    assert "Segment preview" in page.text


@pytest.fixture(scope="module")
def scorer(data_dir: Path):
    """The service's scorer loaded in this process from the same data folder."""
    from serving.ranking import load_scorer
    from serving.settings import ServingSettings

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield load_scorer(Settings(data_dir=data_dir), ServingSettings())
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.mark.parametrize(
    ("k", "exclude"), [(5, ()), (K, ("O0003", "O0010"))], ids=["k5", "k10-exclude"]
)
def test_compiled_offers_equal_the_frame_pipeline(scorer, batch, k, exclude) -> None:
    """Every card of the demo (and an unknown one), batched as requests are:
    the compiled scorer keeps the same offers, in the same order, with the same
    scores and reasons as OfferModel.recommend followed by apply_rules.
    """
    cards, _, _ = batch
    keys = [*cards.card_key, "a-card-key-the-store-does-not-hold"]

    compared = 0
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        fast = scorer.offers(chunk, k, exclude)
        reference = scorer.reference_offers(chunk, k, exclude)
        assert set(fast) == set(reference)
        for key, expected in reference.items():
            got = fast[key]
            assert [(o.rank, o.offer_id, o.reason) for o in got] == [
                (o.rank, o.offer_id, o.reason) for o in expected
            ]
            assert [o.score for o in got] == pytest.approx(
                [o.score for o in expected], abs=1e-9, rel=0
            )
            compared += 1
    assert compared > len(keys) // 2


def test_compiled_propensities_equal_the_needs_model(scorer, batch) -> None:
    cards, _, _ = batch
    keys = [*cards.card_key.head(200), "a-card-key-the-store-does-not-hold"]

    fast = scorer.compiled.propensities(scorer.features.rows(keys))
    frame = scorer.card_features(keys)
    expected = scorer.needs_model.predict_proba(frame).to_numpy()

    assert fast.shape == expected.shape
    assert fast == pytest.approx(expected, abs=1e-12, rel=0, nan_ok=True)


def test_a_recommend_request_reads_the_store_once_with_the_cache_off(
    scorer, batch
) -> None:
    """With the cache off, a request once read every card from the store twice."""
    from serving.schemas import RecommendRequest

    cards, _, _ = batch
    request = RecommendRequest(cards=cards.card_number.head(20).tolist(), k=5)
    cache = scorer.features
    fetch, max_age = cache.fetch, cache.max_age
    reads: list[int] = []

    def counted(keys: list[str]) -> list[dict]:
        reads.append(len(keys))
        return fetch(keys)

    cached = scorer.recommend(request)
    cache.fetch, cache.max_age = counted, 0.0
    try:
        uncached = scorer.recommend(request)
    finally:
        cache.fetch, cache.max_age = fetch, max_age

    assert reads == [20]
    assert uncached.results == cached.results


def test_batch_benchmark_runs_quick_on_the_demo_folder(data_dir: Path) -> None:
    printed = run_quick_mode("bench_batch", data_dir, "--data-dir", str(data_dir))

    assert "same top-k and scores as both reference paths" in printed
    assert printed.rstrip().endswith("True")


def test_serving_benchmark_runs_quick_on_the_demo_folder(data_dir: Path) -> None:
    printed = run_quick_mode("bench_serving", data_dir)

    assert "ours: 1 card, 1 connection" in printed
    assert "peer: bare FastAPI, 10 cards, 16 conn" in printed
    assert "100 cards p99 end to end" in printed
