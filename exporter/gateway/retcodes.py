"""What an operator should check for a RetCode that says the configuration is wrong.

The gateway's own words ("Signature VerifyAC Error") do not say that the private key is
the one to check; :func:`hint` does, for the codes of the API's RetCode table that only
a change of keys, projects, allow-list or permissions can cure (docs/operating.md has
the same table). It is a pure function of the code and the action, so that an error's
detail, a log line and ``--check-config`` say the same thing; it never sees a key.
"""

import re
from typing import Final

_RET_CODE: Final = re.compile(r"RetCode (\d+):")  # how an ApiError's detail starts
_PUBLIC_KEY: Final = "check the public key: the gateway knows no account by it"
_HINTS: Final[dict[int, str]] = {
    170: "the gateway got no signature: something between the exporter and the gateway "
    "(a proxy) dropped it",
    171: "check the private key: it must be the one issued with the public key (a proxy "
    "that rewrites the request also breaks the signature)",
    172: _PUBLIC_KEY,
    174: _PUBLIC_KEY,
    292: "check PROJECT_IDS: the account has no such project, or the key cannot see it",
    294: "the key's IP allow-list refuses this host: add the exporter's outgoing address",
}


def hint(code: int, action: str) -> str | None:
    """What to check for RetCode ``code`` answered to ``action``; None for other codes."""
    if code == 299:
        return (
            f"IAM denied {action}: grant the key's sub-account that permission "
            "(a sub-account must also set PROJECT_IDS)"
        )
    return _HINTS.get(code)


def hint_for(detail: str, action: str) -> str | None:
    """:func:`hint` for a failure whose ``detail`` starts with the gateway's RetCode."""
    code = _RET_CODE.match(detail)
    return hint(int(code[1]), action) if code else None
