"""The UCloud API signature: SHA-1 over the sorted parameters and the private key.

The gateway recomputes the signature from the values it receives, so the values
must be sent exactly as they were signed; :func:`wire_value` is the one place that
decides how a Python value is written, both for signing and for the request body.
"""

import hashlib
from collections.abc import Mapping
from decimal import Decimal

ParamValue = str | int | float | bool


def wire_value(value: ParamValue) -> str:
    """Write a parameter value the way the gateway reads it back."""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        # repr is the shortest exact form; Decimal rewrites its exponent, if any, positionally
        return format(Decimal(repr(value)), "f")
    return str(value)


def sign(params: Mapping[str, ParamValue], private_key: str) -> str:
    """Return the lower-case hex SHA-1 signature of ``params`` (without ``Signature``)."""
    text = "".join(
        name + wire_value(params[name]) for name in sorted(params) if name != "Signature"
    )
    return hashlib.sha1((text + private_key).encode("utf-8")).hexdigest()  # noqa: S324 - the API mandates SHA-1


def signed_form(
    params: Mapping[str, ParamValue], public_key: str, private_key: str
) -> dict[str, str]:
    """Return the request body: every parameter as sent, plus PublicKey and Signature."""
    form = {name: wire_value(value) for name, value in params.items()}
    form["PublicKey"] = public_key
    form["Signature"] = sign(form, private_key)
    return form
