"""The settings of the task kinds, the domain series and the quota sweep: defaults and edges.

Every bad value is one line naming the setting by its variable and flag, never the value.
"""

import os

import pytest

from exporter.settings.config import DEFAULT_REFRESH_BUCKETS, Settings, load_settings
from exporter.settings.names import ConfigError

KEYS = {"public_key": "pub", "private_key": "canary-private-9d1b"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("UCDN_EXPORTER_", "UCLOUD_")):
            monkeypatch.delenv(name)


def settings(**overrides: str) -> Settings:
    return load_settings({**KEYS, **overrides})


def test_defaults() -> None:
    loaded = settings()
    assert loaded.task_kinds == ["prefetch", "refresh"]
    assert loaded.refresh_buckets == list(DEFAULT_REFRESH_BUCKETS)
    assert (loaded.refresh_buckets[0], loaded.refresh_buckets[-1]) == (1, 3600)
    assert (loaded.max_domain_series, loaded.max_domains) == (100, 500)
    assert (loaded.quota_interval_seconds, loaded.quota_parallel_requests) == (300, 4)


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCDN_EXPORTER_TASK_KINDS", " refresh ")
    monkeypatch.setenv("UCDN_EXPORTER_REFRESH_BUCKETS", "0.5,2,30")
    monkeypatch.setenv("UCDN_EXPORTER_QUOTA_INTERVAL_SECONDS", "0")
    loaded = settings()
    assert loaded.task_kinds == ["refresh"]
    assert loaded.refresh_buckets == [0.5, 2, 30]
    assert loaded.quota_interval_seconds == 0  # off


def test_the_order_of_kinds_is_kept() -> None:
    assert settings(task_kinds="refresh,prefetch").task_kinds == ["refresh", "prefetch"]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("task_kinds", "", "at least one kind"),
        ("task_kinds", " , ", "at least one kind"),
        ("task_kinds", "prefetch,purge", "unknown kind of task"),
        ("task_kinds", "Prefetch", "unknown kind of task"),
        ("task_kinds", "prefetch,refresh,prefetch", "twice"),
        ("refresh_buckets", "", "non-empty"),
        ("refresh_buckets", "60,10", "strictly increasing"),
        ("refresh_buckets", "0,10", "positive"),
        ("refresh_buckets", "1,inf", "finite"),
        ("refresh_buckets", "1,nan", ""),
        ("refresh_buckets", "1,ten", ""),
        ("max_domain_series", "0", ""),
        ("max_domain_series", "1e9", ""),
        ("max_domain_series", "100001", ""),
        ("max_domains", "0", ""),
        ("max_domains", "99999999999999999999", ""),
        ("quota_interval_seconds", "-1", ""),
        ("quota_interval_seconds", "inf", ""),
        ("quota_interval_seconds", "nan", ""),
        ("quota_interval_seconds", "86401", ""),
        ("quota_parallel_requests", "0", ""),
        ("quota_parallel_requests", "65", ""),
        ("quota_parallel_requests", "four", ""),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{name: value})
    message = str(caught.value)
    flag = "--" + name.replace("_", "-")
    assert message.startswith(f"invalid setting UCDN_EXPORTER_{name.upper()} ({flag}): ")
    assert problem in message
    assert "\n" not in message
    assert KEYS["private_key"] not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_domain_series", "1"),
        ("max_domain_series", "100000"),
        ("max_domains", "1"),
        ("quota_interval_seconds", "86400"),
        ("quota_parallel_requests", "1"),
        ("quota_parallel_requests", "64"),
    ],
)
def test_the_bounds_themselves_are_accepted(name: str, value: str) -> None:
    assert str(getattr(settings(**{name: value}), name)).removesuffix(".0") == value
