"""The internal frame's language switch keeps the view: filters and drill-down survive a change of language."""

from __future__ import annotations

from urllib.parse import parse_qsl

from dashboard.shell import language_from_search, switched_language_search


def test_switching_language_keeps_every_other_parameter() -> None:
    search = "?from=2026-06-01&to=2026-06-30&area=370303001&channel=patrol&channel=hotline"
    switched = switched_language_search(search)
    assert language_from_search(switched) == "en"
    assert [pair for pair in parse_qsl(switched.lstrip("?")) if pair[0] != "lang"] == parse_qsl(search.lstrip("?"))
    back = switched_language_search(switched)
    assert language_from_search(back) == "zh-CN"
    assert [pair for pair in parse_qsl(back.lstrip("?")) if pair[0] != "lang"] == parse_qsl(search.lstrip("?"))


def test_switching_from_an_empty_or_odd_query() -> None:
    assert switched_language_search(None) == "?lang=en"
    assert switched_language_search("") == "?lang=en"
    assert switched_language_search("?lang=en") == "?lang=zh-CN"
    assert language_from_search(switched_language_search("?lang=xx&lang=en")) == "en"  # unknown → default → en
