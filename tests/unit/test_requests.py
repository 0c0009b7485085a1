"""Request validation, access rules and error bodies, without a server.

The routes run in-process on an unloaded runtime (no models): every bad body must
be refused with a 4xx that names the field, and nothing may produce a 500.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from features.settings import Settings
from serving.app import Runtime, create_app
from serving.segments import SegmentIndex
from serving.settings import ServingSettings
from tests.unit.test_segments import scored_population


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    data_dir = tmp_path_factory.mktemp("serving")
    runtime = Runtime(
        Settings(data_dir=data_dir, pseudonym_secret="x" * 32), ServingSettings()
    )
    frame, offers = scored_population(cards=300)
    runtime._segments = SegmentIndex.from_frames(frame, offers)
    return runtime


@pytest.fixture(scope="module")
def keys(runtime: Runtime) -> dict[str, str]:
    return {
        role: runtime.keys.add(role) for role in ("notification", "campaign", "admin")
    }


@pytest.fixture(scope="module")
def client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(lambda: runtime), raise_server_exceptions=False)


def post(client: TestClient, path: str, key: str | None, body: object) -> object:
    headers = {"X-API-Key": key} if key else {}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        return client.post(path, content=body, headers=headers)
    return client.post(path, json=body, headers=headers)


BAD_RECOMMEND_BODIES = {
    "empty-object": ({}, "cards"),
    "empty-list": ({"cards": []}, "cards"),
    "null-cards": ({"cards": None}, "cards"),
    "string-cards": ({"cards": "0000000001"}, "cards"),
    "object-cards": ({"cards": {"a": 1}}, "cards"),
    "k-zero": ({"cards": ["1"], "k": 0}, "k"),
    "k-negative": ({"cards": ["1"], "k": -3}, "k"),
    "k-huge": ({"cards": ["1"], "k": 10**30}, "k"),
    "k-string": ({"cards": ["1"], "k": "five"}, "k"),
    "k-float": ({"cards": ["1"], "k": 2.5}, "k"),
    "k-bool": ({"cards": ["1"], "k": True}, "k"),
    "k-null": ({"cards": ["1"], "k": None}, "k"),
    "channel-unknown": ({"cards": ["1"], "channel": "pigeon"}, "channel"),
    "exclude-not-list": ({"cards": ["1"], "exclude_offers": "O1"}, "exclude_offers"),
    "exclude-nested": ({"cards": ["1"], "exclude_offers": [[1]]}, "exclude_offers.0"),
    "unknown-field": ({"cards": ["1"], "cardz": []}, "cardz"),
    "top-level-list": ([1, 2, 3], "body"),
    "top-level-null": (None, "body"),
    "top-level-number": (7, "body"),
}


@pytest.mark.parametrize(
    ("body", "field"), BAD_RECOMMEND_BODIES.values(), ids=BAD_RECOMMEND_BODIES.keys()
)
def test_bad_recommend_body_gets_422_naming_the_field(
    client, keys, body, field
) -> None:
    response = post(client, "/recommend", keys["notification"], body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_input"
    assert field in [item["field"] for item in payload["detail"]]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{",
        b"",
        b"\xff\xfe",
        b'{"cards": [1,]}',
        b"[[[[[[[[[[",
        b"nan",
        b"\x00not json",
    ],
    ids=[
        "text",
        "open-brace",
        "empty",
        "binary",
        "trailing-comma",
        "deep",
        "nan",
        "nul",
    ],
)
def test_body_that_is_not_json_gets_422(client, keys, raw: bytes) -> None:
    response = post(client, "/recommend", keys["notification"], raw)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"


def test_more_cards_than_the_limit_gets_413_stating_it(client, keys) -> None:
    body = {"cards": [f"{i:010d}" for i in range(1001)]}

    response = post(client, "/recommend", keys["notification"], body)

    assert response.status_code == 413
    assert "at most 1000" in response.json()["message"]


def test_a_body_over_the_size_limit_gets_413_before_it_is_parsed(client, keys) -> None:
    """A single card of a million digits once came back whole, a megabyte a card."""
    body = {"cards": ["1" * 2_000_000]}

    response = post(client, "/recommend", keys["notification"], body)

    assert response.status_code == 413
    assert "the limit is 1000000 bytes" in response.json()["message"]


def test_a_body_sent_without_a_length_is_cut_at_the_limit(client, keys) -> None:
    def chunks():
        yield b'{"cards": ["'
        for _ in range(300):
            yield b"1" * 10_000
        yield b'"]}'

    response = client.post(
        "/recommend",
        content=chunks(),
        headers={"X-API-Key": keys["notification"], "Content-Type": "application/json"},
    )

    assert response.status_code == 413


def test_a_valid_body_without_models_gets_503_not_500(client, keys) -> None:
    response = post(client, "/needs", keys["admin"], {"cards": ["0000000001", 7]})

    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


@pytest.mark.parametrize(
    "path",
    ["/recommend", "/needs", "/segments/preview", "/admin/reload", "/segments/options"],
)
def test_no_key_gets_401_with_a_json_body(client, path: str) -> None:
    response = client.request(
        "GET" if path.endswith("options") else "POST", path, json={"cards": ["1"]}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_wrong_key_gets_401_even_with_a_bad_body(client) -> None:
    response = post(client, "/recommend", "pk_admin_not-a-key", b"garbage")

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("campaign", "/recommend"),
        ("campaign", "/needs"),
        ("notification", "/segments/preview"),
        ("notification", "/admin/reload"),
        ("campaign", "/admin/reload"),
    ],
)
def test_wrong_role_gets_403(client, keys, role: str, path: str) -> None:
    response = post(client, path, keys[role], {"cards": ["1"]})

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_bearer_token_is_accepted(client, keys) -> None:
    response = client.post(
        "/segments/preview",
        json={},
        headers={"Authorization": f"Bearer {keys['campaign']}"},
    )

    assert response.status_code == 200


BAD_SEGMENT_BODIES = {
    "unknown-filter": ({"filters": {"postcode": ["1"]}}, "filters.postcode"),
    "unknown-top-field": ({"filter": {}}, "filter"),
    "filters-null-list": (
        {"filters": {"post_id": None, "country": []}},
        "filters.country",
    ),
    "generation-text": ({"filters": {"generation": ["two"]}}, "filters.generation.0"),
    "consent-text": (
        {"filters": {"consent_marketing": "yes"}},
        "filters.consent_marketing",
    ),
    "status-unknown": ({"filters": {"card_status": ["lost"]}}, "filters.card_status.0"),
    "need-above-one": (
        {"filters": {"need": {"need_id": "news_media", "min_propensity": 1.5}}},
        "filters.need.min_propensity",
    ),
    "need-extra": (
        {"filters": {"need": {"need_id": "news_media", "p": 0.5}}},
        "filters.need.p",
    ),
    "top-offers-huge": ({"top_offers": 10**6}, "top_offers"),
}


@pytest.mark.parametrize(
    ("body", "field"), BAD_SEGMENT_BODIES.values(), ids=BAD_SEGMENT_BODIES.keys()
)
def test_bad_segment_body_gets_422_naming_the_field(client, keys, body, field) -> None:
    response = post(client, "/segments/preview", keys["campaign"], body)

    assert response.status_code == 422
    assert field in [item["field"] for item in response.json()["detail"]]


def test_unscored_need_gets_422(client, keys) -> None:
    body = {"filters": {"need": {"need_id": "astrology"}}}

    response = post(client, "/segments/preview", keys["campaign"], body)

    assert response.status_code == 422
    assert "filters.need.need_id" in response.json()["message"]


def test_segment_preview_of_a_tiny_post_reveals_no_number(client, keys) -> None:
    body = {"filters": {"post_id": ["P99"]}}

    response = post(client, "/segments/preview", keys["campaign"], body)

    assert response.status_code == 200
    assert response.json()["size"] == "fewer than 10"


def test_segment_options_list_levels_but_no_counts(client, keys) -> None:
    response = client.get("/segments/options", headers={"X-API-Key": keys["campaign"]})

    assert response.status_code == 200
    assert "P01" in response.json()["filters"]["post_id"]
    assert "key00001" not in json.dumps(response.json())


def test_segment_page_is_served_without_a_key(client) -> None:
    response = client.get("/segments")

    assert response.status_code == 200
    assert "<form" in response.text


def test_unknown_path_gets_a_json_404(client) -> None:
    response = client.get("/nowhere")

    assert response.status_code == 404
    assert response.json()["error"] == "http_error"


def test_wrong_method_gets_a_json_405(client, keys) -> None:
    response = client.get("/recommend", headers={"X-API-Key": keys["admin"]})

    assert response.status_code == 405


def test_body_with_a_nul_byte_gets_422_not_400(client, keys) -> None:
    response = post(client, "/needs", keys["notification"], b"\x00not json")

    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"
