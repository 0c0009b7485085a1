"""Card numbers: canonical spelling at the edges, keyed pseudonyms in between."""

from __future__ import annotations

import pytest

from features.cards import canonical_card_number, pseudonym, pseudonyms
from features.errors import InputError

SECRET = b"a-test-secret-of-enough-length"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("0012345678", "0012345678", id="string"),
        pytest.param(12345678, "0012345678", id="int-lost-leading-zeros"),
        pytest.param(" 0012-345 678 ", "0012345678", id="spaces-and-dashes"),
        pytest.param(0, "0000000000", id="zero"),
    ],
)
def test_canonical_card_number_gives_ten_digits(raw: object, expected: str) -> None:
    assert canonical_card_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(12345678901, "more than 10 digits", id="int-too-long"),
        pytest.param(-5, "negative", id="negative"),
        pytest.param(1234.0, "decimal number", id="float"),
        pytest.param(True, "must be 10 digits", id="bool"),
        pytest.param(None, "must be 10 digits", id="none"),
        pytest.param("12AB", "only digits", id="letters"),
        pytest.param("123456789012", "12 digits", id="string-too-long"),
        pytest.param("12345678", "8 digits", id="short-string-is-not-padded"),
        pytest.param("12-34", "4 digits", id="typo-with-dash-is-not-padded"),
        pytest.param("1" * 100_000, r"\.\.\. \(100000 characters\)", id="huge-cut"),
        pytest.param(["1"], "must be a string", id="list"),
    ],
)
def test_canonical_card_number_refuses_what_is_not_a_card(
    raw: object, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        canonical_card_number(raw)


def test_int_and_string_spellings_get_the_same_pseudonym() -> None:
    from_int = pseudonym(canonical_card_number(12345), SECRET)
    from_text = pseudonym(canonical_card_number("0000012345"), SECRET)

    assert from_int == from_text


def test_pseudonym_depends_on_the_secret_and_hides_the_number() -> None:
    first = pseudonym("0000012345", SECRET)
    other = pseudonym("0000012345", SECRET + b"x")

    assert first != other
    assert "12345" not in first
    assert pseudonyms(["0000012345", "0000012346"], SECRET)[0] == first
