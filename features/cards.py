"""Card numbers at the edges, keyed pseudonyms in between.

A card number is a string of exactly :data:`CARD_DIGITS` digits; leading zeros are
part of it. A number that arrives as a JSON or CSV integer lost its leading zeros on
the way, so it is padded back; anything else is refused with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from features.errors import InputError

CARD_DIGITS = 10
PSEUDONYM_HEX_CHARS = 24
MAX_SHOWN_CHARS = 24
_SEND_DIGITS = f"send it as a string of {CARD_DIGITS} digits"


def canonical_card_number(raw: object) -> str:
    """Return the canonical 10-digit string for a card number.

    Args:
        raw: the card number as received: a string of exactly ten digits (spaces
            and dashes between them are ignored) or an integer that lost its
            leading zeros on the way. Only integers are padded: a short string is
            more likely a typo than a lost zero, and padding it could name another
            card holder.

    Returns:
        The card number as exactly ten digits.

    Raises:
        InputError: when the value is not a card number; the message says why.
    """
    if isinstance(raw, bool) or raw is None:
        raise InputError(
            f"card number must be {CARD_DIGITS} digits, got {raw!r}; {_SEND_DIGITS}"
        )
    if isinstance(raw, int):
        text = str(raw)
        if raw < 0 or len(text) > CARD_DIGITS:
            raise InputError(
                f"card number {raw} has more than {CARD_DIGITS} digits or is negative; "
                "check it against the card"
            )
        return text.zfill(CARD_DIGITS)
    if isinstance(raw, float):
        raise InputError(f"card number {raw!r} is a decimal number; {_SEND_DIGITS}")
    if not isinstance(raw, str):
        raise InputError(
            f"card number must be a string, got {type(raw).__name__}; {_SEND_DIGITS}"
        )
    text = raw.strip().replace(" ", "").replace("-", "")
    if not text.isascii() or not text.isdigit():
        raise InputError(
            f"card number {_shown(raw)} must contain only digits; {_SEND_DIGITS}"
        )
    if len(text) != CARD_DIGITS:
        raise InputError(
            f"card number {_shown(raw)} has {len(text)} digits; expected "
            f"{CARD_DIGITS}; check it against the card"
        )
    return text


def _shown(raw: str) -> str:
    """The received value for an error message, cut short when it is long."""
    if len(raw) <= MAX_SHOWN_CHARS:
        return repr(raw)
    return f"{raw[:MAX_SHOWN_CHARS]!r}... ({len(raw)} characters)"


def pseudonym(card_number: str, secret: bytes) -> str:
    """Keyed pseudonym of a canonical card number (truncated HMAC-SHA256, hex)."""
    digest = hmac.new(secret, card_number.encode("ascii"), hashlib.sha256)
    return digest.hexdigest()[:PSEUDONYM_HEX_CHARS]


def pseudonyms(card_numbers: Iterable[str], secret: bytes) -> list[str]:
    """Pseudonyms of many canonical card numbers, in order."""
    return [pseudonym(number, secret) for number in card_numbers]
