"""The console's Models screen against an in-process appliance's registry: families, versions, aliases and
history shown; import, promote and roll back driven by keys through their dialogs."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Select

from appliance.files import sha256_file
from appliance.models.manifest import SMOLLM2, smollm2_path
from appliance.tui.app import ConsoleApp
from appliance.tui.dialogs import FormDialog
from tests.inprocess import InProcessServer, echo_appliance
from tests.tui.conftest import until

SIZE = (160, 48)


def rows(app: ConsoleApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """Two ready (pinned) versions of a family `assistant`, nothing probed."""
    app = echo_appliance(
        tmp_path_factory.mktemp("console-registry") / "data",
        llm={"load_at_start": False, "model": SMOLLM2.name},
        registry={"watch_inbox": False},
    )
    reg = app.registry.registry
    reg.register_pinned(
        "assistant", "chat", "llama.cpp", smollm2_path(), SMOLLM2.sha256, None, "test", ["chat"]
    )
    variant = tmp_path_factory.mktemp("weights") / "variant.gguf"
    variant.write_bytes(smollm2_path().read_bytes()[:4096])
    reg.register_pinned(
        "assistant", "chat", "llama.cpp", variant, sha256_file(variant), None, "test", ["chat"]
    )
    junk = tmp_path_factory.mktemp("junk") / "junk.gguf"
    junk.write_bytes(b"not a model" * 50)
    server = InProcessServer(app).start()
    server.junk = junk
    yield server
    server.stop()
    app.close()


async def _submit(pilot, app: ConsoleApp, **values: str) -> None:
    await until(pilot, lambda: isinstance(app.screen, FormDialog), what="the dialog")
    for name, value in values.items():
        field = app.screen.query_one(f"#field-{name}")
        if isinstance(field, Select):
            field.value = value
        else:
            field.value = value
    app.screen.query_one("#ok").press()
    await until(pilot, lambda: not isinstance(app.screen, FormDialog), what="the dialog to close")


def _select(app: ConsoleApp, key: str) -> None:
    table = app.query_one("#registry", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(key))


@pytest.mark.anyio
async def test_the_models_screen_promotes_rolls_back_and_imports(srv):
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(
            pilot, lambda: any(r[0] == "assistant" for r in rows(app, "#registry")), what="the registry"
        )
        assert ["assistant", "v2", "chat", "ready", "-"] == next(
            r for r in rows(app, "#registry") if r[0] == "assistant"
        )[:5]
        smol = next(r for r in rows(app, "#registry") if r[0] == SMOLLM2.name)
        assert smol[4] == "default"

        for version in (1, 2):
            _select(app, f"assistant@{version}")
            await pilot.press("p")
            await _submit(pilot, app, alias="production", reason=f"release {version}")
            await until(
                pilot,
                lambda v=version: (
                    next(r for r in rows(app, "#registry") if r[:2] == ["assistant", f"v{v}"])[4]
                    == "production"
                ),
                what=f"production on v{version}",
            )
        history = lambda: str(app.query_one("#registry-history").render())  # noqa: E731
        await until(pilot, lambda: "production v1 → v2  promote, ungated" in history(), what="the history")

        _select(app, "assistant@2")
        await pilot.press("b")
        await _submit(pilot, app, alias="production")
        await until(pilot, lambda: "production v2 → v1  rollback" in history(), what="the rollback")
        assert srv.app.registry.get(srv.app.access.system_scope(), "assistant").aliases == {"production": 1}

        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, FormDialog), what="the import dialog")
        app.screen.query_one("#field-name", Input).value = "junk"
        await _submit(pilot, app, path=str(srv.junk))
        await until(
            pilot,
            lambda: any(r[:4] == ["junk", "v1", "chat", "rejected"] for r in rows(app, "#registry")),
            what="the rejected import",
        )


@pytest.mark.anyio
async def test_the_models_screen_starts_a_canary_and_a_shadow_and_shows_them(srv):
    from appliance.tui.screens.models import ModelsView

    admin = srv.app.access.system_scope()
    if srv.app.registry.get(admin, "assistant").aliases.get("production") != 1:  # run on its own
        srv.app.registry.promote(admin, "assistant", 1, "production")
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(
            pilot, lambda: any(r[0] == "assistant" for r in rows(app, "#registry")), what="the registry"
        )
        view = app.query_one(ModelsView)
        history = lambda: str(app.query_one("#registry-history").render())  # noqa: E731
        _select(app, "assistant@2")
        view.action_canary()
        await _submit(pilot, app, steps="10,100", min_samples="1000")
        await until(pilot, lambda: "canary assistant v2 10% · v1 90%" in history(), what="the canary")
        _select(app, "assistant@2")
        view.action_shadow()
        await _submit(pilot, app, share="50%")
        await until(pilot, lambda: "shadow assistant v2 mirrors 50%" in history(), what="the shadow")
        _select(app, "assistant@2")
        await pilot.press("b")
        await _submit(pilot, app, alias="canary")
        await until(pilot, lambda: "canary assistant v2" not in history(), what="the canary stopped")
        assert srv.app.rollouts.canary("assistant").state == "rolled_back"


@pytest.mark.anyio
async def test_the_models_screen_imports_a_remote_model(srv, tmp_path):
    """A remote model from the palette's dialog: here the appliance's own API on loopback, probed."""
    from appliance.tui.screens.models import ModelsView

    key_file = tmp_path / "self.key"
    key_file.write_text(srv.key)
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(
            pilot, lambda: any(r[0] == "assistant" for r in rows(app, "#registry")), what="the registry"
        )
        app.query_one(ModelsView).action_import_remote()
        await _submit(
            pilot, app, url=f"{srv.url}/v1", model="echo", name="mirror", api_key_file=str(key_file)
        )
        await until(
            pilot,
            lambda: any(r[:4] == ["mirror", "v1", "chat", "ready"] for r in rows(app, "#registry")),
            what="the remote import",
        )
    (version,) = srv.app.registry.get(srv.app.access.system_scope(), "mirror").versions
    assert version.backend == "remote" and "remote" in version.tags
