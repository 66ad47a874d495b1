"""Rating answers from the console: `+` and `-` (and the command palette) rate the latest answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from textual.binding import Binding

from appliance.tui.widgets import View, guarded

# Listed in the help (?) and the command palette; kept out of the footer, which stays for the
# keys of the screen's main work.
RATE_BINDINGS = [
    Binding("plus", "rate('up')", "Rate answer up", key_display="+", show=False),
    Binding("minus", "rate('down')", "Rate answer down", key_display="-", show=False),
]


class RatesAnswers(View):
    """A view that shows answers: it remembers the latest answer's id, and `+` / `-` rate it
    (escape leaves the text field first, so the keys reach the screen)."""

    answer_id: str | None = None
    rating: str | None = None  # of the latest answer, once rated

    def answered(self, event: dict) -> None:
        """Call with each final `answer` event."""
        self.answer_id = event.get("id") or None
        self.rating = None

    def action_rate(self, rating: str) -> None:
        if not self.answer_id:
            self.console.notice("no answer to rate yet")
            return
        self.run_worker(self._rate(self.answer_id, rating), group="rate", exit_on_error=False)

    @guarded
    async def _rate(self, answer_id: str, rating: str) -> None:
        await self.api.rate_answer(answer_id, rating)
        if answer_id == self.answer_id:
            self.rating = rating
            self.show_rating(rating)
        self.console.notice(f"answer rated {rating}")

    def show_rating(self, rating: str) -> None:
        """Override: show that the latest answer was rated."""

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        yield "Rate answer up", "Mark the latest answer as good (+)", lambda: self.action_rate("up")
        yield "Rate answer down", "Mark the latest answer as wrong (-)", lambda: self.action_rate("down")
