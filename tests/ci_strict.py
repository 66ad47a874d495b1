"""In CI (CI=true) a test may not skip because a model or Python package is missing: that fails."""

from __future__ import annotations

import os

import pytest

# In CI every model and Python package the tests use is installed by `make test`, so a
# skip for one of them is a broken installation, reported as a failure. These reasons are facts
# of the machine instead (operating-system packages, privileges, kernel features) and may skip.
MACHINE_FACTS = (
    "r-doc-pdf not installed",
    "python3.11-doc not installed",
    "cannot create a network namespace",
    "zstd is not installed",
    "changing a repository's owner needs root",
    "systemd-analyze",
    "cannot mount a tmpfs here",
    "promtool is not installed",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if not any(fact in reason for fact in MACHINE_FACTS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {reason}"
