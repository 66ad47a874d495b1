"""Chat templates rendered in a locked-down Jinja sandbox: a model file's template is untrusted code."""

from __future__ import annotations

import json
import operator
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from appliance.errors import InvalidInput

# A template is a few KB; a 64 KB one is either broken or hostile, and compiling it costs real time.
MAX_TEMPLATE_CHARS = 64 * 1024
# Rendered output may repeat the conversation a few times (system prompt, tool lists) but not explode.
OUTPUT_BASE_CHARS = 64 * 1024
OUTPUT_FACTOR = 4
DEFAULT_TIME_LIMIT_S = 2.0
# Ints and sequences a template may build with * and **: far above what real templates need.
_MAX_BUILT_LENGTH = 1_000_000
_MAX_POW_BITS = 4096

# Globals Jinja provides by default whose attributes lead back to Python internals; real chat
# templates never use them (they use `namespace`, `range`, `dict`, which stay).
_REMOVED_GLOBALS = ("cycler", "joiner", "lipsum")
_FORMAT_DUNDER = re.compile(r"\{[^{}]*(?:\._|\[_)")


class UnsafeTemplate(InvalidInput):
    """A chat template tried to reach Python internals, or broke a size or time limit."""

    title = "Unsafe chat template"


class TemplateRejected(InvalidInput):
    """The template itself refused the conversation (raise_exception), e.g. roles that do not alternate."""


class _RenderLimits(threading.local):
    deadline: float = float("inf")


def _build_environment() -> Any:
    # Imported here: jinja2 is only needed once a chat model loads.
    from jinja2.exceptions import SecurityError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    limits = _RenderLimits()

    class _Environment(ImmutableSandboxedEnvironment):
        """The sandbox, made strict: unsafe access raises at once instead of yielding an empty Undefined."""

        intercepted_binops = frozenset({"*", "**"})

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            # The base sandbox already refuses "_"-prefixed names and known internals (func_globals,
            # gi_frame, ...); "mro" and "format_map"-style reflection gets the same treatment.
            if attr in ("mro", "format_map"):
                return False
            return super().is_safe_attribute(obj, attr, value)

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

        def _check_time(self) -> None:
            if time.monotonic() > limits.deadline:
                raise UnsafeTemplate("the chat template ran past its time limit")

        def getattr(self, obj: Any, attribute: str) -> Any:
            self._check_time()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            self._check_time()
            return super().getitem(obj, argument)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            __self._check_time()
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
            self._check_time()
            if operator_name == "*":
                for seq, n in ((left, right), (right, left)):
                    if (
                        isinstance(seq, str | list | tuple)
                        and isinstance(n, int)
                        and len(seq) * n > _MAX_BUILT_LENGTH
                    ):
                        raise UnsafeTemplate("the chat template builds an oversized string or list")
                return operator.mul(left, right)
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if max(left.bit_length(), 1) * right > _MAX_POW_BITS:
                    raise UnsafeTemplate("the chat template computes an oversized number")
            return operator.pow(left, right)

    env = _Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], autoescape=False)
    for name in _REMOVED_GLOBALS:
        env.globals.pop(name, None)

    def raise_exception(message: str) -> None:
        raise TemplateRejected(f"the model's chat template refused the conversation: {message}")

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        # Jinja's own tojson HTML-escapes <, > and &, which would corrupt prompts; templates expect json.dumps.
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    env.filters["tojson"] = tojson
    return env, limits, SecurityError


_env_lock = threading.Lock()
_env_state: tuple[Any, _RenderLimits, type[Exception]] | None = None


def _environment() -> tuple[Any, _RenderLimits, type[Exception]]:
    global _env_state
    with _env_lock:
        if _env_state is None:
            _env_state = _build_environment()
        return _env_state


def _static_check(env: Any, source: str) -> None:
    """Refuse, before first use, templates whose text names internals (the sandbox refuses them anyway)."""
    from jinja2 import nodes

    tree = env.parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter, nodes.Const)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value if isinstance(node.arg.value, str) else None
        elif isinstance(node, nodes.Name):
            if node.name in _REMOVED_GLOBALS:
                raise UnsafeTemplate(
                    f"the chat template uses {node.name!r}, which chat templates may not use"
                )
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            arg = node.args[0] if node.args else None
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                name = arg.value
        elif (
            isinstance(node, nodes.Const)
            and isinstance(node.value, str)
            and _FORMAT_DUNDER.search(node.value)
        ):
            # '{0.__class__}'.format(x) smuggles an attribute path in through a format string.
            raise UnsafeTemplate("the chat template holds a format string that reaches for internals")
        if name is not None and (name.startswith("_") or name in ("mro", "format_map")):
            raise UnsafeTemplate(f"the chat template accesses {name!r}: Python internals are off limits")


class ChatTemplate:
    """A compiled, checked chat template. `render` turns messages into the prompt text.

    Checked twice: at load (the template's text may not name internals) and at render (the sandbox
    refuses any unsafe attribute, call or oversized value, and limits output size and time).
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    ) -> None:
        if not isinstance(source, str) or not source.strip():
            raise InvalidInput("the chat template is empty")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise UnsafeTemplate(
                f"the chat template is {len(source)} characters, over the {MAX_TEMPLATE_CHARS} limit"
            )
        self.env, self._limits, self._security_error = _environment()
        from jinja2 import TemplateSyntaxError

        try:
            _static_check(self.env, source)
            self._template = self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise InvalidInput(
                f"the chat template is not valid Jinja: {exc.message} (line {exc.lineno})"
            ) from None
        self.source = source
        # The template reads a `tools` variable and writes tool calls (Qwen2.5, Llama 3.1, Hermes):
        # tools go through it; otherwise the caller writes them into plain messages.
        self.renders_tools = bool(re.search(r"\btools\b", source)) and "tool_call" in source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.time_limit_s = time_limit_s

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt for `messages` ({"role", "content"} mappings); `extra` reaches the template as variables."""
        from jinja2 import TemplateError

        # Plain dicts and lists: the immutable sandbox then refuses any attempt to modify them.
        plain = [dict(m) for m in messages]
        budget = OUTPUT_BASE_CHARS + OUTPUT_FACTOR * (
            sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) for m in plain)
            + len(str(extra.get("tools") or ""))
        )
        context = {
            "messages": plain,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
            **extra,
        }
        self._limits.deadline = time.monotonic() + self.time_limit_s
        out: list[str] = []
        size = 0
        try:
            for piece in self._template.generate(**context):
                size += len(piece)
                if size > budget:
                    raise UnsafeTemplate(f"the chat template's output passed {budget} characters")
                out.append(piece)
                if time.monotonic() > self._limits.deadline:
                    raise UnsafeTemplate("the chat template ran past its time limit")
        except InvalidInput:
            raise
        except self._security_error as exc:
            raise UnsafeTemplate(f"the chat template was refused by the sandbox: {exc}") from None
        except TemplateError as exc:
            raise InvalidInput(f"the chat template failed to render: {exc}") from None
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise InvalidInput(f"the chat template failed to render: {type(exc).__name__}: {exc}") from None
        finally:
            self._limits.deadline = float("inf")
        return "".join(out)
