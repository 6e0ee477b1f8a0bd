"""Reading an exposition in tests: every sample by name and label set, and one value of it.

The one place tests parse the text format, with prometheus_client's own parser, so a
broken exposition fails every test that reads it, the same way.
"""

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample named ``name`` whose labels include ``labels``.

    ``None`` when there is none; several matches fail the test, since the caller's labels
    then do not say which series it means.
    """
    matches = [
        found
        for (sample_name, sample_labels), found in parsed.items()
        if sample_name == name and set(labels.items()) <= sample_labels
    ]
    if len(matches) > 1:
        raise AssertionError(f"{len(matches)} samples of {name} match {labels}")
    return matches[0] if matches else None
