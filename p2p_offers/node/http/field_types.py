"""The API's field types: ids, keys and money as the edge parses and describes them.

Money crosses the edge as decimal strings (or JSON numbers, which the app
parses as ``Decimal``, never ``float``) and is converted to integer cents and
satoshis here, exactly, once; the JSON schema of each money type says exactly
what the parser takes (a test runs schemathesis against it), so both live here.
The request and response models built from them are ``schemas``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from p2p_offers import money
from p2p_offers.offers import OfferStatus

Status = OfferStatus
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
Id = Annotated[str, Field(pattern=UUID4, description="a uuid4")]
Sig = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
Owner = Annotated[
    str,
    Field(pattern=r"^(?:[0-9a-f]{64}|me)$", description="a client_id (hex), or me: this node"),
]


def money_schema(unit: str, places: int, maximum: int) -> dict[str, Any]:
    """Exactly what ``money.parse_*`` takes: a decimal string or a JSON number, > 0, at
    most ``places`` decimals (trailing zeros aside), at most ``maximum`` units."""
    top = str(maximum // 10**places)  # the largest whole part, allowed with a zero fraction
    fraction = rf"(?:\.[0-9]{{1,{places}}}0*)?"
    nonzero_fraction = "|".join(f"0{{{i}}}[1-9][0-9]{{0,{places - 1 - i}}}" for i in range(places))
    number = rf"0*(?:{_below(top)}){fraction}|0*{top}(?:\.0+)?|0+\.(?:{nonzero_fraction})0*"
    # surrounding ASCII spaces are allowed (and count towards maxLength, as in the code)
    spaces = r"[ \t\n\r\f\v]*"
    string = rf"^{spaces}(?:{number}){spaces}$"
    return {
        "anyOf": [
            {"type": "string", "pattern": string, "maxLength": money.MAX_DIGITS},
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": maximum // 10**places,
                "multipleOf": 10**-places,
            },
        ],
        "description": f"{unit}: a decimal string or number, > 0, at most {places} decimals",
    }


def _below(top: str) -> str:
    """A regex of the positive integers below ``top`` (decimal digits, no leading zero)."""
    shorter = [f"[1-9][0-9]{{0,{len(top) - 2}}}"] if len(top) > 1 else []
    same = []
    for i, digit in enumerate(top):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(top) - i - 1
            same.append(f"{top[:i]}[{low}-{int(digit) - 1}][0-9]{{{rest}}}")
    return "|".join(shorter + same) or "(?!)"


PriceUsd: TypeAlias = Annotated[
    int,
    BeforeValidator(money.parse_usd),
    WithJsonSchema(money_schema("USD per BTC", 2, money.MAX_PRICE_CENTS)),
]
AmountBtc: TypeAlias = Annotated[
    int,
    BeforeValidator(money.parse_btc),
    WithJsonSchema(money_schema("BTC", 8, money.MAX_AMOUNT_SATS)),
]
UsdString = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", examples=["30000.00"])]
BtcString = Annotated[str, Field(pattern=r"^\d+\.\d{8}$", examples=["0.50000000"])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _given(parse: Any) -> Any:
    """``parse``, refusing an explicit null: a field one may leave out, not set to null."""

    def check(value: object) -> int:
        if value is None:
            raise ValueError("leave the field out instead of sending null")
        result: int = parse(value)
        return result

    return check


# Money one may leave out (and not send as null); a field adds its own description.
OptionalUsd: TypeAlias = Annotated[
    int | None,
    BeforeValidator(_given(money.parse_usd)),
    WithJsonSchema(money_schema("USD per BTC", 2, money.MAX_PRICE_CENTS)),
]
OptionalBtc: TypeAlias = Annotated[
    int | None,
    BeforeValidator(_given(money.parse_btc)),
    WithJsonSchema(money_schema("BTC", 8, money.MAX_AMOUNT_SATS)),
]


SignedUsd = Annotated[
    str,
    Field(
        pattern=r"^-?\d+\.\d{2,10}$",
        description="USD, exact: an amount at a price is rarely whole cents (up to 10 decimals)",
    ),
]
SignedBtc = Annotated[str, Field(pattern=r"^-?\d+\.\d{8}$")]
