"""EchoRuntime's own promises, beyond the runtime contract it shares: its template and what it echoes."""

from __future__ import annotations

from appliance.models.echo import EchoRuntime
from appliance.models.runtime import ChatMessage, GenerationParams

CHAT = [
    ChatMessage("system", "be brief"),
    ChatMessage("user", "first question"),
    ChatMessage("assistant", "first answer"),
    ChatMessage("user", "per diem in\nEurope"),
]


def test_the_template_and_the_echo_of_the_last_user_message():
    rt = EchoRuntime()
    prompt = rt.render_chat(CHAT)
    assert prompt == (
        "<|system|>\nbe brief\n<|user|>\nfirst question\n<|assistant|>\nfirst answer\n"
        "<|user|>\nper diem in\nEurope\n<|assistant|>\n"
    )
    assert rt.count_tokens(prompt) == len(prompt.split())
    done = rt.generate(prompt, GenerationParams(max_tokens=7, temperature=0.0))
    assert done.text == "per diem in Europe per diem in" and done.finish_reason == "length"
    assert done.prompt_tokens == rt.count_tokens(prompt) and done.completion_tokens == 7


def test_a_plain_prompt_is_echoed_whole_and_nothing_to_echo_stops_at_once():
    rt = EchoRuntime()
    assert (
        rt.generate("the capital of France", GenerationParams(max_tokens=4, temperature=0.0)).text
        == "the capital of France"
    )
    empty = rt.generate(rt.render_chat([ChatMessage("user", " ")]), GenerationParams(max_tokens=4))
    assert empty.text == "" and empty.finish_reason == "stop" and empty.completion_tokens == 0


def test_sampling_draws_only_the_messages_words():
    rt = EchoRuntime()
    prompt = rt.render_chat(CHAT)
    text = rt.generate(prompt, GenerationParams(max_tokens=30, temperature=1.0, seed=7)).text
    assert set(text.split()) <= {"per", "diem", "in", "Europe"} and len(text.split()) == 30
