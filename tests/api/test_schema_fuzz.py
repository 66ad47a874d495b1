"""Schema fuzzing: schemathesis generates requests for every operation of /schema/openapi.json,
with an admin key and with a user key, valid ones and invalid ones, against a live server.

Every answer must be no server error (5xx other than a documented 503), carry a status code the
operation documents, with a documented content type and a body that conforms to the documented
schema. A route whose answers drift from its declaration fails here, so the document
(appliance/api/openapi.py and the routes' types) stays the truth.

Deterministic: Hypothesis is derandomized (a fixed seed per test), with no example database, and
operations run in the schema's order. Bounded: EXAMPLES per operation, key and mode.

Nothing is excluded. The two operations that change the server under test for everything after
them (chat model unload and load) run last. One adjustment to generated requests: generation
is capped at GENERATION_CAP tokens (`max_tokens`, and the answer setting), so a generated
`max_tokens: 2000` does not spend half a minute of this box's CPU; every other field is as
generated.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import TEST_MODEL_ENV, ServerProcess

# Per operation, key and mode; SCHEMA_FUZZ_EXAMPLES=200 for a deep run by hand.
EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "5"))
GENERATION_CAP = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# They change the server for every operation after them: the chat model goes away, or is replaced.
LAST = (
    # A full calibration of the box runs in the background for minutes: last, so the server stops it.
    "POST /api/v1/plan/calibrate",
    "POST /api/v1/admin/models/load",
    "POST /api/v1/admin/models/unload",
)
GENERATING = {"POST /v1/chat/completions", "POST /v1/completions", "POST /api/v1/plan/intent"}
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    env = {**TEST_MODEL_ENV, "APPLIANCE_ANSWER__MAX_ANSWER_TOKENS": str(GENERATION_CAP)}
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", env=env).start(require_llm=True)
    with srv.client() as admin:
        assert admin.post("/api/v1/collections", json={"name": "fuzz"}).status_code == 201
        stored = admin.post(
            "/api/v1/documents",
            params={"wait": "true"},
            json={
                "collection": "fuzz",
                "source_id": "fuzz.md",
                "text": "# Fuzzing\n\nSchemathesis sends every operation valid and invalid requests.",
                "metadata": {"team": "qa", "nested": {"level": 2}},
            },
        )
        assert stored.status_code == 200, stored.text
        user = admin.post("/api/v1/keys", json={"name": "fuzz-user", "role": "user", "collections": ["fuzz"]})
        assert user.status_code == 201, user.text
    schema = schemathesis.openapi.from_url(
        f"{srv.url}/schema/openapi.json", headers={"Authorization": f"Bearer {srv.key}"}
    )
    yield srv, schema, {"admin": srv.key, "user": user.json()["key"]}
    srv.stop()


def _cap_generation(case) -> None:
    if not isinstance(case.body, dict):
        return
    limited = False
    for field in ("max_tokens", "max_completion_tokens"):
        value = case.body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            case.body[field] = min(value, GENERATION_CAP)
            limited = True
    if not limited:  # absent or null: the model would generate up to the end of its context
        case.body["max_tokens"] = GENERATION_CAP


def _fuzz(operation, mode: GenerationMode, call: Callable, failures: list[str]) -> int:
    sent = 0

    @SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        nonlocal sent
        if operation.label in GENERATING:
            _cap_generation(case)
        response = call(case)
        sent += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            failures.append(f"{mode.value}: {exc}")

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation with nothing to get wrong (no parameters, no body).
        assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def test_every_operation_answers_within_its_schema(fuzzed):
    srv, schema, keys = fuzzed
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, [op.label for op in operations]
    operations.sort(key=lambda op: LAST.index(op.label) if op.label in LAST else -1)
    assert [op.label for op in operations[-len(LAST) :]] == list(LAST), "an operation in LAST is gone"
    report: dict[str, list[str]] = {}
    sent = 0
    for operation in operations:
        for role, key in keys.items():
            failures: list[str] = []

            def call(case, key=key):
                return case.call(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                sent += _fuzz(operation, mode, call, failures)
            if failures:
                report[f"{operation.label} ({role} key)"] = sorted(set(failures))
    assert sent > len(operations) * 2 * EXAMPLES, sent
    assert not report, (
        "\n\n".join(f"== {where}\n" + "\n--\n".join(found[:3]) for where, found in report.items())
        + f"\n\nserver log:\n{srv.log()[-5000:]}"
    )
