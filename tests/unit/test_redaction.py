"""One redaction for every message that names a World URL."""

from __future__ import annotations

import pytest

from tether.redaction import redact, scrub
from tether.worlds import open_world


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/prod", "postgresql://app:***@db:5432/prod"),
        ("postgresql://app@db/prod?password=s3cret", "postgresql://app@db/prod?password=***"),
        (
            "postgresql://app:s3cret@db/prod?schema=t&PASSWORD=s3cret",
            "postgresql://app:***@db/prod?schema=t&PASSWORD=***",
        ),
        ("postgresql://app@db/prod?schema=tether", "postgresql://app@db/prod?schema=tether"),
        ("sqlite:///.tether/tether.db", "sqlite:///.tether/tether.db"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_every_password_is_masked(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_scrub_hides_the_url_and_its_passwords_anywhere_in_a_message() -> None:
    url = "postgresql://app:pw1@db/prod?password=pw2"
    message = f"cannot reach {url}: authentication of app with pw1 or pw2 failed"
    scrubbed = scrub(message, url)
    assert "pw1" not in scrubbed and "pw2" not in scrubbed
    assert "postgresql://app:***@db/prod?password=***" in scrubbed


def test_an_error_naming_a_world_url_hides_its_password() -> None:
    with pytest.raises(ValueError, match=r"unsupported world URL 'mysql://app:\*\*\*@db/prod'"):
        open_world("mysql://app:s3cret@db/prod")
