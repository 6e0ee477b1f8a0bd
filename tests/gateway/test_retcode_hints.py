"""The hint for each RetCode that a change of configuration cures (exporter/gateway/retcodes.py),
in ``--check-config`` (tests/test_cli_modes.py) and in the log line of a failed collection.
"""

import pytest
from faultkit import Exporter, exporter_args, simulator

from exporter.gateway.answers import PREFETCH_ACTION, QUOTA_ACTION, REFRESH_ACTION
from exporter.gateway.retcodes import hint, hint_for


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


def test_a_detail_gives_the_hint_of_its_retcode_and_no_other() -> None:
    assert hint_for("RetCode 171: Signature VerifyAC Error", PREFETCH_ACTION) == hint(
        171, PREFETCH_ACTION
    )
    assert hint_for("RetCode 153: too many requests", PREFETCH_ACTION) is None
    assert hint_for("HTTP 500", PREFETCH_ACTION) is None


@pytest.mark.e2e
def test_a_wrong_private_key_logs_what_to_check_with_the_failed_collection() -> None:
    api = simulator(private_key="the-key-the-gateway-knows")
    exporter = Exporter(exporter_args(api.url)).wait_started()
    try:
        assert exporter.scrape().up() == 0
        failures = exporter.failures(at_least=1)
    finally:
        exporter.stop()
        api.stop()
    assert failures, "no collection failed line"
    assert {(f.get("reason"), f.get("hint")) for f in failures} == {
        ("api_error", hint(171, PREFETCH_ACTION))
    }
