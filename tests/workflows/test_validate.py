"""`appliance wf validate`'s checks: every broken fixture rejected at the path its first line expects;
the issue's minimal document and the good fixtures pass; versions are hashes of the canonical form."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.workflows.documents import DocumentError, parse
from appliance.workflows.library import validate_files

HERE = Path(__file__).parent
BROKEN = sorted((HERE / "broken").glob("*.yaml"))
GOOD = sorted((HERE / "good").glob("*.yaml"))


def test_there_are_at_least_thirty_broken_files():
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_a_broken_file_is_rejected_with_the_path_of_its_fault(path):
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ")
    want_path, want_message = expected.split(": ", 1)
    with pytest.raises(DocumentError) as caught:
        validate_files([(path.name, text)])
    err = caught.value
    assert err.path == want_path, str(err)
    assert want_message in err.message, str(err)
    assert str(err).startswith(path.name)


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_a_good_file_validates(path):
    assert validate_files([(path.name, path.read_text())])


def test_the_version_is_the_hash_of_the_canonical_form():
    a = parse("kind: Workflow\nname: v\nsteps: [{id: a, tool: builtin.echo, with: {text: hi}}]\n")[0]
    b = parse(
        '{"steps": [{"with": {"text": "hi"}, "tool": "builtin.echo", "id": "a"}], "name": "v", "kind": "Workflow"}'
    )[0]
    c = parse("kind: Workflow\nname: v\nsteps: [{id: a, tool: builtin.echo, with: {text: ho}}]\n")[0]
    assert a.version == b.version != c.version
    assert len(a.version) == 16


def test_files_are_checked_together():
    agent = "kind: Agent\nname: helper\ninstructions: help\ntools: [builtin.echo]\n"
    flow = "kind: Workflow\nname: f\nsteps: [{id: a, agent: helper, with: {prompt: hi}}]\n"
    assert len(validate_files([("agent.yaml", agent), ("flow.yaml", flow)])) == 2
    with pytest.raises(DocumentError, match="flow.yaml: steps\\[0\\].agent: unknown agent 'helper'"):
        validate_files([("flow.yaml", flow)])
