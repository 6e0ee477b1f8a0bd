"""The UCloud signature: the provider's known answer, and what the gateway reads back."""

import itertools

import pytest

from exporter.gateway.signature import sign, signed_form, wire_value

KNOWN_PUBLIC = "ucloudsomeone@example.com1296235120854146120"
KNOWN_PRIVATE = "46f09bb9fab4f12dfc160dae12273d5332b5debe"
KNOWN_PARAMS: dict[str, str | int] = {
    "Action": "DescribeUHostInstance",
    "Region": "cn-bj2",
    "Limit": 10,
    "PublicKey": KNOWN_PUBLIC,
}
KNOWN_SIGNATURE = "cba5cf5ec4d4233d206b1b54951e3787350a642f"


def test_known_answer_vector() -> None:
    assert sign(KNOWN_PARAMS, KNOWN_PRIVATE) == KNOWN_SIGNATURE


@pytest.mark.parametrize("order", list(itertools.permutations(KNOWN_PARAMS)))
def test_parameter_order_does_not_change_the_signature(order: tuple[str, ...]) -> None:
    assert sign({name: KNOWN_PARAMS[name] for name in order}, KNOWN_PRIVATE) == KNOWN_SIGNATURE


def test_an_existing_signature_parameter_is_not_signed() -> None:
    assert sign({**KNOWN_PARAMS, "Signature": "stale"}, KNOWN_PRIVATE) == KNOWN_SIGNATURE


def test_any_change_changes_the_signature() -> None:
    assert sign({**KNOWN_PARAMS, "Limit": 11}, KNOWN_PRIVATE) != KNOWN_SIGNATURE
    assert sign(KNOWN_PARAMS, KNOWN_PRIVATE + "x") != KNOWN_SIGNATURE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (42.0, "42"),
        (1.5, "1.5"),
        (1e-7, "0.0000001"),
        (1e20, "100000000000000000000"),
        (10, "10"),
        ("cn-bj2", "cn-bj2"),
    ],
)
def test_values_are_written_as_the_gateway_reads_them(value: object, expected: str) -> None:
    assert wire_value(value) == expected  # type: ignore[arg-type]


def test_signed_form_sends_exactly_what_it_signed() -> None:
    form = signed_form({"Action": "A", "IsDcdn": False, "Limit": 10.0}, "pub", "priv")
    assert form["IsDcdn"] == "false"
    assert form["Limit"] == "10"
    assert form["PublicKey"] == "pub"
    unsigned = {name: value for name, value in form.items() if name != "Signature"}
    assert form["Signature"] == sign(unsigned, "priv")
    assert "priv" not in form.values()
