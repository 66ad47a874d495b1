"""Plan: the capacity planner's intent form, its ranked recommendations, a what-if panel (one number
changed, the prediction before and after) and the validations' predicted-vs-measured history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static

from appliance.client import ApiError
from appliance.tui.dialogs import ConfirmDialog
from appliance.tui.widgets import View, fill_table, selected_key

TASKS = ("chat", "rag", "summarisation", "code")
PRIORITIES = ("latency", "cost", "accuracy")
# The intent form's number fields: (field id, label, type). Blank stays blank: the server fills
# what it may from the task's defaults and says so; it never gets a number the operator did not give.
NUMBERS: tuple[tuple[str, str, type], ...] = (
    ("users", "users", int),
    ("rate", "requests/s", float),
    ("prompt_tokens", "prompt tokens", int),
    ("output_tokens", "output tokens", int),
    ("p95_ttft_ms", "p95 TTFT ms", float),
    ("tokens_per_s_per_user", "tokens/s/user", float),
)
# What the what-if panel may change: a load number of the intent or a setting of the configuration.
WHATIF_FIELDS = ("users", "rate", "prompt_tokens", "output_tokens", "slots", "context")
LOAD_FIELDS = ("task", "users", "rate", "prompt_tokens", "output_tokens")


class FormError(ValueError):
    """A field of the form that is not a number of its kind."""


def parse_number(field: str, text: str, kind: type) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise FormError(
            f"{field}: {text!r} is not {'a whole number' if kind is int else 'a number'}"
        ) from None
    if value <= 0:
        raise FormError(f"{field}: must be above 0")
    return value


def intent_from_form(values: dict[str, str], task: str, priority: str) -> dict[str, Any]:
    """The body of POST /api/v1/plan/recommend from the form's texts (FormError names a bad field)."""
    intent: dict[str, Any] = {"task": task, "priority": priority}
    for field, label, kind in NUMBERS:
        value = parse_number(label, values.get(field, ""), kind)
        if value is not None:
            intent[field] = value
    if "users" in intent and "rate" in intent:
        raise FormError("give users or requests/s, not both")
    return intent


def candidate_row(c: dict) -> list[Any]:
    feasible = Text("ok", style="green") if c["feasible"] else Text("x", style="bold red")
    return [
        str(c["rank"]),
        feasible,
        c["id"],
        _num(c.get("ttft_p95_ms")),
        _num(c.get("e2e_p95_ms")),
        _num(c.get("cost_usd_month")),
        c.get("binding_constraint") or "",
    ]


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2f}"


def predict_body(candidate: dict, intent: dict) -> dict[str, Any]:
    """POST /api/v1/plan/predict for a recommended configuration under the intent's load."""
    body = {k: intent[k] for k in LOAD_FIELDS if k in intent}
    body |= {k: candidate[k] for k in ("model", "target", "slots", "context", "threads")}
    return body


def changed_body(base: dict, field: str, value: float) -> dict[str, Any]:
    """The base prediction's body with one number changed (users and requests/s replace each other)."""
    body = dict(base)
    if field in ("users", "rate"):
        body.pop("users", None)
        body.pop("rate", None)
    body[field] = value if field == "rate" else int(value)
    return body


WHATIF_METRICS = (
    ("p95 TTFT ms", lambda p: p["ttft_ms"]["p95"]),
    ("p95 e2e ms", lambda p: p["e2e_ms"]["p95"]),
    ("tokens/s per user", lambda p: p["tokens_per_s_per_user"]),
    ("throughput req/s", lambda p: p["throughput_rps"]),
    ("utilisation", lambda p: p["utilisation"]),
    ("$/month", lambda p: p.get("cost_usd_month")),
)


def whatif_text(field: str, old: Any, new: Any, before: dict, after: dict) -> str:
    """Before and after, metric by metric, with the relative change."""
    lines = [f"{field}: {old if old is not None else 'default'} -> {new}"]
    for name, get in WHATIF_METRICS:
        a, b = get(before), get(after)
        change = f"{(b - a) / a:+.0%}" if a and b is not None else ""
        lines.append(f"  {name:<18} {_num(a):>10} -> {_num(b):>10}  {change}")
    lines.append(f"  bound: {before['binding_constraint']} -> {after['binding_constraint']}")
    if after.get("extrapolated"):
        lines.append("  extrapolated: " + "; ".join(after.get("extrapolation") or []))
    return "\n".join(lines)


def validation_outcome(v: dict) -> Text:
    """What a validation did: the model's refit factors after it, the SLO verdicts, the rollback."""
    parts: list[tuple[str, str]] = []
    refit = v.get("refit")
    if refit and refit.get("factors_after"):
        f = refit["factors_after"]
        dropped = " dropped" if refit["dropped"] else ""
        parts.append((f"refit{dropped} x{f['prefill_factor']:.2f}/x{f['decode_factor']:.2f}", "dim"))
    for verdict in v.get("verdicts") or []:
        style = {"met": "green", "missed": "red"}.get(verdict["verdict"], "yellow")
        parts.append((f"{verdict['slo']} {verdict['verdict']}", style))
    rollback = v.get("rollback")
    if rollback:
        label = {"offered": "rollback offered", "done": "rolled back"}.get(
            rollback["state"], f"rollback {rollback['state']}"
        )
        parts.append((label, "bold red" if rollback["state"] == "offered" else "bold"))
    text = Text()
    for i, (words, style) in enumerate(parts):
        text.append(("; " if i else "") + words, style=style)
    return text


def validation_rows(validations: list[dict]) -> tuple[list[list[Any]], list[str]]:
    """One row per metric of each validation, newest first (its outcome on the first); keys
    `<validation id>:<n>`."""
    rows, keys = [], []
    for v in validations:
        for i, r in enumerate(v["rows"]):
            inside = Text("inside", style="green") if r["inside_interval"] else Text("OUTSIDE", style="red")
            error = f"{r['error']:+.0%}" if r.get("error") is not None else "-"
            rows.append(
                [
                    v["created_at"][:19].replace("T", " "),
                    v["config_id"],
                    str(v["users"]),
                    r["metric"],
                    _num(r["predicted"]),
                    _num(r["measured"]),
                    error,
                    inside,
                    validation_outcome(v) if i == 0 else Text(""),
                ]
            )
            keys.append(f"{v['id']}:{i}")
    return rows, keys


class PlanView(View):
    """The capacity planner. Describe the deployment in words (the local model fills the form with
    the numbers you said, never others, and asks for what is missing) or fill the intent (task, users or requests/s, prompt and output tokens,
    priority, the p95 time-to-first-token and tokens/s constraints; blank numbers are the task's
    defaults, said so) and press `enter`: the configurations ranked by the priority, each with its
    binding constraint. The what-if panel changes one number of the selected configuration and shows
    the prediction before and after. `a` applies the selected configuration to this box (default
    alias, llm settings, reload), `b` rolls the newest apply back. Below: each `appliance plan
    validate` run, predicted vs measured."""

    label = "plan"
    initial_focus = "#plan-describe"
    BINDINGS = [Binding("a", "apply", "Apply selected"), Binding("b", "rollback", "Roll back apply")]
    DEFAULT_CSS = """
    PlanView #plan-main { height: 3fr; }
    PlanView #plan-form { width: 38; border-right: solid $primary 50%; }
    PlanView #plan-question { height: auto; max-height: 4; padding: 0 1; color: $text-muted; }
    PlanView .field { height: 1; }
    PlanView .field Label { width: 15; padding: 0 1; }
    PlanView .field Input, PlanView .field Select { width: 1fr; }
    PlanView #plan-right { width: 1fr; }
    PlanView #plan-summary { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    PlanView #plan-table { height: 1fr; min-height: 4; }
    PlanView #plan-whatif-bar { height: 1; }
    PlanView #plan-whatif-bar Select { width: 22; }
    PlanView #plan-whatif-value { width: 16; }
    PlanView #plan-whatif { height: auto; min-height: 3; padding: 0 1; }
    PlanView #plan-validations { height: 1fr; min-height: 3; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.recommendation: dict | None = None
        self._intent: dict[str, Any] = {}
        self._validations: list[dict] = []
        self._conversation: list[dict[str, str]] = []  # the describe box's turns, for plan_intent

    def compose(self) -> ComposeResult:
        with Horizontal(id="plan-main"):
            with VerticalScroll(id="plan-form"):
                yield Label("Describe it in words (enter)", classes="section")
                yield Input(placeholder="e.g. a support chat for 30 people", id="plan-describe", compact=True)
                yield Static("", id="plan-question", markup=False)
                yield Label("Intent (enter recommends)", classes="section")
                with Horizontal(classes="field"):
                    yield Label("task")
                    yield Select(
                        [(t, t) for t in TASKS], value="chat", allow_blank=False, id="plan-task", compact=True
                    )
                for field, label, _ in NUMBERS:
                    with Horizontal(classes="field"):
                        yield Label(label)
                        yield Input(placeholder="default", id=f"plan-{field}", compact=True)
                with Horizontal(classes="field"):
                    yield Label("priority")
                    yield Select(
                        [(p, p) for p in PRIORITIES],
                        value="latency",
                        allow_blank=False,
                        id="plan-priority",
                        compact=True,
                    )
                yield Static("", id="plan-applied", markup=False)
            with Vertical(id="plan-right"):
                yield Label("Recommendations (a applies the selected, b rolls back)", classes="section")
                yield Static("fill the intent and press enter", id="plan-summary", markup=False)
                yield DataTable(id="plan-table", cursor_type="row", zebra_stripes=True)
                yield Label("What if (the selected configuration; enter predicts)", classes="section")
                with Horizontal(id="plan-whatif-bar"):
                    yield Select(
                        [(f, f) for f in WHATIF_FIELDS],
                        value="users",
                        allow_blank=False,
                        id="plan-whatif-field",
                        compact=True,
                    )
                    yield Input(placeholder="new value", id="plan-whatif-value", compact=True)
                yield Static("", id="plan-whatif", markup=False)
        yield Label("Validations: predicted vs measured (`appliance plan validate`)", classes="section")
        yield DataTable(id="plan-validations", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#plan-table", DataTable).add_columns(
            "#", "", "configuration", "p95 TTFT ms", "p95 e2e ms", "$/month", "binding constraint"
        )
        self.query_one("#plan-validations", DataTable).add_columns(
            "when",
            "configuration",
            "users",
            "metric",
            "predicted",
            "measured",
            "error",
            "interval",
            "refit, SLOs, rollback",
        )

    # -- fetching -------------------------------------------------------------------------------------
    async def load(self) -> None:
        validations = await self.api.plan_validations()
        applies = await self.api.plan_applies()
        self.show_history(validations, applies)

    def show_history(self, validations: list[dict], applies: list[dict]) -> None:
        self._validations = validations
        rows, keys = validation_rows(validations)
        fill_table(self.query_one("#plan-validations", DataTable), rows, keys)
        in_force = next((a for a in applies if a["state"] == "applied"), None)
        self.query_one("#plan-applied", Static).update(
            f"in force: {in_force['config_id']} ({in_force['created_at'][:19]})"
            if in_force
            else "in force: the settings file (no plan applied)"
        )

    def show_recommendation(self, rec: dict) -> None:
        self.recommendation = rec
        candidates = rec["candidates"]
        fill_table(
            self.query_one("#plan-table", DataTable),
            [candidate_row(c) for c in candidates],
            [c["id"] for c in candidates],
        )
        assumed = "; ".join(rec.get("assumed") or [])
        self.query_one("#plan-summary", Static).update(
            f"{rec['feasible']} of {rec['configurations']} configurations meet the constraints"
            f" (swept in {rec['sweep_seconds']} s)" + (f" · assumed {assumed}" if assumed else "")
        )

    # -- the intent ---------------------------------------------------------------------------------
    def form_values(self) -> dict[str, str]:
        return {field: self.query_one(f"#plan-{field}", Input).value for field, _, _ in NUMBERS}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "plan-whatif-value":
            self.run_action(self._whatif(), "whatif")
        elif event.input.id == "plan-describe":
            self.run_action(self._describe(), "describe")
        else:
            self.run_action(self._recommend(), "recommend")

    @staticmethod
    def _bad_input(exc: FormError) -> ApiError:
        """A field the form refuses, reported like the server's own 400 (through `guarded`)."""
        return ApiError(400, "Bad input", str(exc))

    async def _recommend(self) -> None:
        try:
            intent = intent_from_form(
                self.form_values(),
                str(self.query_one("#plan-task", Select).value),
                str(self.query_one("#plan-priority", Select).value),
            )
        except FormError as exc:
            raise self._bad_input(exc) from None
        self.query_one("#plan-summary", Static).update("sweeping the configurations...")
        rec = await self.api.plan_recommend(**intent, top=20)
        self._intent = intent
        self.show_recommendation(rec)

    async def _describe(self) -> None:
        """The conversation so far, read by the server's chat model: the numbers the user said fill
        the form (nothing else does), and its question for what is missing is shown."""
        field = self.query_one("#plan-describe", Input)
        text = field.value.strip()
        if not text:
            return
        conversation = [*self._conversation, {"role": "user", "content": text}]
        draft = await self.api.plan_intent(conversation)
        self._conversation = conversation
        field.value = ""
        self.show_draft(draft)

    def show_draft(self, draft: dict) -> None:
        if draft.get("question"):
            self._conversation.append({"role": "assistant", "content": draft["question"]})
        for name, _, _ in NUMBERS:
            if draft.get(name) is not None:
                self.query_one(f"#plan-{name}", Input).value = f"{draft[name]:g}"
        for name in ("task", "priority"):
            if draft.get(name) is not None:
                self.query_one(f"#plan-{name}", Select).value = draft[name]
        lines = [draft["question"] or "complete: press enter in the form to recommend"]
        lines += [f"not kept: {why}" for why in draft["dropped"]]
        self.query_one("#plan-question", Static).update("\n".join(lines))

    def selected(self) -> dict | None:
        key = selected_key(self.query_one("#plan-table", DataTable))
        if self.recommendation is None or key is None:
            return None
        return next((c for c in self.recommendation["candidates"] if c["id"] == key), None)

    # -- what if --------------------------------------------------------------------------------------
    async def _whatif(self) -> None:
        candidate = self.selected()
        if candidate is None:
            self.console.notice("recommend first, then select a configuration")
            return
        field = str(self.query_one("#plan-whatif-field", Select).value)
        kind = float if field == "rate" else int
        try:
            value = parse_number(field, self.query_one("#plan-whatif-value", Input).value, kind)
        except FormError as exc:
            raise self._bad_input(exc) from None
        if value is None:
            self.console.notice("type the new value first")
            return
        base = predict_body(candidate, self._intent)
        if "users" not in base and "rate" not in base:
            base["users"] = 1  # the recommendation's own reading of an intent without a load
        before = await self.api.plan_predict(**base)
        after = await self.api.plan_predict(**changed_body(base, field, value))
        self.query_one("#plan-whatif", Static).update(
            f"{candidate['id']}\n" + whatif_text(field, base.get(field), value, before, after)
        )

    # -- apply and roll back --------------------------------------------------------------------------
    def action_apply(self) -> None:
        candidate = self.selected()
        if candidate is None:
            self.console.notice("select a recommended configuration first")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.run_action(self._apply(candidate["id"]), "apply")

        self.app.push_screen(
            ConfirmDialog(f"Apply {candidate['id']} to this box? The chat model reloads."), answer
        )

    async def _apply(self, config_id: str) -> None:
        self.console.notice(f"applying {config_id}: reloading the chat model...")
        record = await self.api.plan_apply(config_id)
        self.console.notice(f"{record['state']} {config_id}: chat model {record['health']}")
        await self.load()

    def action_rollback(self) -> None:
        def answer(yes: bool | None) -> None:
            if yes:
                self.run_action(self._rollback(), "rollback")

        self.app.push_screen(ConfirmDialog("Roll back the newest applied plan?"), answer)

    async def _rollback(self) -> None:
        record = await self.api.plan_rollback()
        self.console.notice(f"rolled back {record['config_id']}: chat model {record['health']}")
        await self.load()

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        yield (
            "Plan: recommend",
            "Rank configurations for the intent",
            lambda: self.run_action(self._recommend(), "recommend"),
        )
        yield ("Plan: apply selected", "Serve the selected configuration on this box", self.action_apply)
        yield ("Plan: roll back", "Undo the newest applied plan", self.action_rollback)
