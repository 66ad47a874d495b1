"""Chat: a multi-turn conversation with a chosen model, its history kept by the server."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, ListItem, ListView, Select, Static

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.rating import RATE_BINDINGS, RatesAnswers
from appliance.tui.widgets import guarded

DEFAULT_MODEL = "default"


class Message(Static):
    DEFAULT_CSS = """
    Message { padding: 0 1; margin-bottom: 1; }
    Message.user { background: $primary 15%; }
    Message.assistant { background: $surface; }
    """


class ChatView(RatesAnswers):
    """Conversations on the left (enter reopens one), the transcript on the right; type and press
    enter to send. Answers stream in, grounded in the knowledge base, with their citations;
    + or - (after escape) rates the latest answer."""

    label = "chat"
    initial_focus = "#message"
    BINDINGS = [Binding("ctrl+n", "new", "New conversation"), *RATE_BINDINGS]
    DEFAULT_CSS = """
    ChatView #chat-body { height: 1fr; }
    ChatView #conversations { width: 26; border-right: solid $primary 40%; }
    ChatView #transcript { width: 1fr; }
    ChatView #chat-head { height: 3; }
    ChatView #model { width: 34; }
    ChatView #chat-title { width: 1fr; padding: 1 1 0 1; }
    ChatView #message { dock: bottom; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.conversation_id: str | None = None
        self._models: list[str] = []
        self.replies = 0  # answers completed in this session
        self._reply: tuple[Message, str] | None = None  # the latest answer's widget and its text

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-head"):
            yield Select([(DEFAULT_MODEL, DEFAULT_MODEL)], value=DEFAULT_MODEL, allow_blank=False, id="model")
            yield Label("new conversation", id="chat-title")
        with Horizontal(id="chat-body"):
            yield ListView(id="conversations")
            with Vertical(id="transcript"):
                yield VerticalScroll(id="messages")
                yield Input(
                    placeholder="message (enter sends; ctrl+n starts a new conversation)", id="message"
                )

    async def load(self) -> None:
        models = [m["id"] for m in await self.api.chat_models()]
        conversations = await self.api.conversations()
        self.show_list(models, conversations)

    def show_list(self, models: list[str], conversations: list[dict]) -> None:
        if models != self._models:
            self._models = models
            select = self.query_one("#model", Select)
            current = select.value
            options = list(dict.fromkeys([DEFAULT_MODEL, *models]))
            select.set_options([(m, m) for m in options])
            select.value = current if current in options else DEFAULT_MODEL
        listing = self.query_one("#conversations", ListView)
        listing.clear()
        for conv in conversations:
            title = conv.get("title") or conv["id"]
            listing.append(ListItem(Label(fmt.clip(title, 24)), name=conv["id"]))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name:
            self.run_worker(
                self._open(event.item.name), group="chat-open", exclusive=True, exit_on_error=False
            )

    @guarded
    async def _open(self, conversation_id: str) -> None:
        conv = await self.api.conversation(conversation_id)
        self.conversation_id = conv["id"]
        self.answered({})  # the answers of a reopened conversation are rated where they were given
        self.query_one("#chat-title", Label).update(conv.get("title") or conv["id"])
        box = self.query_one("#messages", VerticalScroll)
        await box.remove_children()
        for m in conv.get("messages", []):
            await box.mount(
                Message(self._format_message(m["role"], m["content"], m.get("citations")), classes=m["role"])
            )
        box.scroll_end(animate=False)
        self.query_one("#message", Input).focus()

    def action_new(self) -> None:
        self.conversation_id = None
        self.answered({})
        self.query_one("#chat-title", Label).update("new conversation")
        self.run_worker(self.query_one("#messages", VerticalScroll).remove_children(), exit_on_error=False)
        self.query_one("#message", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if event.input.id == "message" and text:
            event.input.value = ""
            self.run_worker(self._send(text), group="chat-send", exclusive=True, exit_on_error=False)

    @guarded
    async def _send(self, text: str) -> None:
        model = str(self.query_one("#model", Select).value or DEFAULT_MODEL)
        if self.conversation_id is None:
            conv = await self.api.create_conversation(None, title=fmt.clip(text, 60))
            self.conversation_id = conv["id"]
            self.query_one("#chat-title", Label).update(conv.get("title") or conv["id"])
            self.reload()  # the new conversation appears in the list
        box = self.query_one("#messages", VerticalScroll)
        await box.mount(Message(self._format_message("user", text), classes="user"))
        reply = Message("…", classes="assistant")
        await box.mount(reply)
        box.scroll_end(animate=False)
        answer = ""
        async for event in self.api.send_message(self.conversation_id, text, model):
            kind = event.get("type")
            if kind == "queue":
                reply.update(f"… waiting for the model (position {event.get('position')})")
            elif kind == "token":
                answer += event.get("text", "")
                reply.update(self._format_message("assistant", answer))
                box.scroll_end(animate=False)
            elif kind == "error":
                raise ApiError.from_event(event, "Chat failed")
            elif kind == "answer":
                text = self._format_message("assistant", event.get("answer", ""), event.get("citations"))
                reply.update(text)
                box.scroll_end(animate=False)
                self._reply = (reply, text)
                self.answered(event)
                self.replies += 1

    def show_rating(self, rating: str) -> None:
        if self._reply is not None:
            reply, text = self._reply
            reply.update(f"{text}\n  [dim]rated {rating}[/]")

    @staticmethod
    def _format_message(role: str, content: str, citations: list | None = None) -> str:
        who = "[b]you[/b]" if role == "user" else "[b $accent]assistant[/]"
        body = escape(content)  # model text is not markup
        cites = "".join(
            f"\n  [dim]\\[{c['n']}] {fmt.clip(c.get('title') or c.get('source_id'), 60)}[/]"
            for c in citations or []
        )
        return f"{who}\n{body}{cites}"
