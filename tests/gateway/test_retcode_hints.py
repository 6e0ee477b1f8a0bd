"""The hint for each RetCode that a change of configuration cures (exporter/gateway/retcodes.py).

Here rather than in tests/gateway/ while the gateway's tests are rewritten; it belongs there.
"""

import pytest

from exporter.gateway.answers import QUOTA_ACTION, REFRESH_ACTION
from exporter.gateway.retcodes import hint


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (170, "got no signature"),
        (171, "check the private key"),
        (172, "check the public key"),
        (174, "check the public key"),
        (292, "check PROJECT_IDS"),
        (294, "IP allow-list"),
    ],
)
def test_each_configuration_code_says_what_to_check(code: int, words: str) -> None:
    tip = hint(code, REFRESH_ACTION)
    assert tip is not None and words in tip
    assert REFRESH_ACTION not in tip  # only IAM's answer depends on the action


def test_iam_names_the_action_it_denied() -> None:
    assert hint(299, QUOTA_ACTION) == (
        f"IAM denied {QUOTA_ACTION}: grant the key's sub-account that permission "
        "(a sub-account must also set PROJECT_IDS)"
    )


@pytest.mark.parametrize("code", [0, 110, 130, 150, 153, 160, 161, 230, 293])
def test_other_codes_have_no_hint(code: int) -> None:
    # Passing faults and the gateway's own: a configuration change would not cure them.
    assert hint(code, REFRESH_ACTION) is None
