"""Host policy: which api_url is accepted, and where the key may be sent."""

from __future__ import annotations

import pytest

from target_userpilot.wire.urls import check_api_url, host_of, job_url, link_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://analytex.userpilot.io", "https://analytex.userpilot.io"),
        ("https://analytex-eu.userpilot.io/", "https://analytex-eu.userpilot.io"),
        (" HTTPS://Analytex.Userpilot.IO/v1/ ", "https://analytex.userpilot.io"),
        ("https://example.com:8443/proxy/", "https://example.com:8443/proxy"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.3.4.5", "http://127.3.4.5"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_check_api_url_accepts(url: str, expected: str) -> None:
    assert check_api_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://analytex.userpilot.io",
        "http://10.0.0.1:8080",
        "http://localhost.evil.com",
        "ftp://analytex.userpilot.io",
        "analytex.userpilot.io",
        "https://",
        "https://user:pw@analytex.userpilot.io",
        "https://analytex.userpilot.io/?x=1",
        "",
    ],
)
def test_check_api_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="api_url"):
        check_api_url(url)


def test_job_ids_with_colons_are_escaped() -> None:
    url = job_url("https://h.io", "bulk:jobs:NX-1:u")
    assert url == "https://h.io/v1/background_jobs/bulk%3Ajobs%3ANX-1%3Au"


def test_links_are_followed_only_on_the_api_host() -> None:
    api = "https://analytex.userpilot.io"
    assert link_url(api, "/v1/background_jobs/bulk:jobs:NX-1:u") == (
        "https://analytex.userpilot.io/v1/background_jobs/bulk:jobs:NX-1:u"
    )
    assert link_url(api, "https://evil.example/v1/background_jobs/x") is None
    assert link_url(api, "http://analytex.userpilot.io/v1/x") is None  # never downgrade
    assert link_url(api, None) is None
    assert link_url(api, "") is None


def test_host_is_what_a_log_line_shows() -> None:
    assert host_of("https://example.com:8443/proxy") == "https://example.com:8443"
