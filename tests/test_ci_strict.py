"""The CI rule itself: a skip for something `make test` installs fails; a fact of the machine may skip."""

from __future__ import annotations

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_model():
    pytest.skip("all-mpnet-base-v2 parts not installed")

@pytest.mark.skipif(True, reason="r-doc-pdf not installed (apt-get install r-doc-pdf)")
def test_needs_an_os_package():
    pass
"""


def test_in_ci_a_missing_model_fails_and_a_missing_os_package_skips(pytester, monkeypatch):
    pytester.makepyfile(SKIPPING)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", "tests.ci_strict")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped in CI, where nothing may be missing*mpnet*"])


def test_outside_ci_both_skip(pytester, monkeypatch):
    pytester.makepyfile(SKIPPING)
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest("-p", "tests.ci_strict").assert_outcomes(skipped=2)
