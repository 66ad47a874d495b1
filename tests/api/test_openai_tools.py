"""Function calling and structured output through the official `openai` SDK, against a live server on SmolLM2.

SmolLM2-135M's template does not render tools, so these go through the generic format; the
grammar makes every call parse whatever the small model would have written.
"""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "maxLength": 40}},
            "required": ["tz"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 30},
        "age": {"type": "integer"},
        "email": {"anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "age", "email", "tags", "born"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("tools") / "data", env=TEST_MODEL_ENV).start(require_llm=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(llm_server):
    return openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key=llm_server.key, max_retries=0, timeout=300)


def _chat(client, **kwargs):
    return client.chat.completions.create(
        **{"model": "default", "max_tokens": 96, "temperature": 0, **kwargs}
    )


def _valid_weather(call) -> dict:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    return args


def test_models_say_which_tool_format(client):
    models = {m.id: m.model_dump() for m in client.models.list().data}
    smol = models["SmolLM2-135M-Instruct"]
    assert {"tools", "json_output"} <= set(smol["capabilities"]) and smol["tool_format"] == "generic"
    assert "tools" not in models["embedding"]["capabilities"]


def test_tool_round_trip(client):
    first = _chat(
        client, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.function.name in ("get_weather", "get_time")
    json.loads(call.function.arguments)
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),  # as agent frameworks send it back
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    final = _chat(client, messages=history, tools=[WEATHER, TIME], tool_choice="none")
    assert final.choices[0].message.content.strip() and not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason in ("stop", "length")
    alone = _chat(client, messages=ASK, tools=[WEATHER, TIME], tool_choice="none", max_tokens=1)
    # The call and its result were in the prompt (as generic-format messages).
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 20


def test_tool_choice_none_required_and_named(client):
    none = _chat(client, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=16)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
    named = _chat(
        client,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    calls = named.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    assert isinstance(json.loads(calls[0].function.arguments)["tz"], str)
    required = _chat(client, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    _valid_weather(required.choices[0].message.tool_calls[0])


def test_parallel_calls(client):
    r = _chat(
        client,
        messages=[{"role": "user", "content": "What is the weather in Paris and in Rome?"}],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
    )
    calls = r.choices[0].message.tool_calls
    assert len(calls) >= 2 and len({c.id for c in calls}) == len(calls)
    for call in calls:
        _valid_weather(call)


def test_streamed_tool_calls_are_assembled_by_the_sdk(client):
    kwargs = dict(
        model="default",
        messages=[{"role": "user", "content": "What is the weather in Paris and in Rome?"}],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    )
    with client.chat.completions.stream(**kwargs) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    plain = client.chat.completions.create(**kwargs)
    got = [(c.function.name, c.function.arguments) for c in streamed.choices[0].message.tool_calls]
    assert got == [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls]
    assert streamed.choices[0].finish_reason == "tool_calls" and len(got) >= 2
    for call in streamed.choices[0].message.tool_calls:
        _valid_weather(call)


DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")


def _errors(value, schema: dict) -> list[str]:
    """What `jsonschema` finds wrong. "format" is an annotation in JSON Schema; the grammar enforces
    a date's shape (not the calendar: 2001-02-30 passes), so the shape is checked here too."""
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(value)]
    born = value.get("born") if isinstance(value, dict) else None
    if isinstance(born, str) and not DATE.fullmatch(born):
        errors.append(f"born: {born!r} is not a date")
    return errors


def test_the_validation_can_fail():
    good = {"name": "Ann", "age": 3, "email": None, "tags": ["a"], "born": "2001-02-03"}
    assert _errors(good, PERSON) == []
    for bad in (
        {**good, "age": "3"},
        {**good, "tags": ["z"]},
        {**good, "born": "2001-13-03"},
        {**good, "x": 1},
    ):
        assert _errors(bad, PERSON)


def test_json_schema_output_is_valid_in_every_sample(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    msgs = [{"role": "user", "content": "Invent a person."}]
    for seed in range(50):
        r = client.chat.completions.create(
            model="default", messages=msgs, response_format=fmt, temperature=1.0, seed=seed, max_tokens=200
        )
        assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
        value = json.loads(r.choices[0].message.content)
        assert _errors(value, PERSON) == [], value


def test_json_object_output_always_parses(client):
    finished = 0
    for seed in range(10):
        r = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Describe a cat in JSON."}],
            response_format={"type": "json_object"},
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        if r.choices[0].finish_reason == "stop":  # a cut-off object (length) is not yet an object
            assert isinstance(json.loads(r.choices[0].message.content), dict)
            finished += 1
    assert finished >= 5, f"only {finished} of 10 objects were complete within max_tokens"


@pytest.mark.parametrize(
    ("kwargs", "param", "needle"),
    [
        (dict(logprobs=True), "logprobs", "logprobs"),
        (dict(top_logprobs=2), "top_logprobs", "top_logprobs"),
        (dict(n=2), None, "n=1"),
        (dict(modalities=["text", "audio"]), "modalities", "modalities"),
        (dict(extra_body={"min_p": 0.1}), "min_p", "min_p"),
        (
            dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content[0]",
            "image_url",
        ),
        (
            dict(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "integer", "minimum": 0}},
                }
            ),
            "response_format",
            "'minimum'",
        ),
        (
            dict(
                tools=[
                    {
                        **WEATHER,
                        "function": {**WEATHER["function"], "parameters": {"type": "object", "not": {}}},
                    }
                ]
            ),
            "tools[0].function.parameters",
            "'not'",
        ),
        (
            dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
            "nope",
        ),
        (dict(functions=[WEATHER["function"]]), "functions", "tools"),
    ],
)
def test_unsupported_fields_are_refused_by_name(client, kwargs, param, needle):
    request = {"model": "default", "messages": ASK, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**request)
    body = info.value.body
    assert needle in body["message"], body
    if param is not None:
        assert body["param"] == param, body


def _nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


@pytest.mark.parametrize(
    ("schema", "needle"),
    [
        (_nested(20), "deeper than 16"),  # deeper bodies still meet limits.max_json_depth first
        ({"enum": list(range(5000))}, "enum must list 1 to 256"),
        (
            {
                "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
                "$ref": "#/$defs/n",
            },
            "recursive $ref",
        ),
        (
            {"type": "array", "items": {"type": "string"}, "maxItems": 10**9},
            "maxItems must be an integer from 0 to 256",
        ),
        ({"type": "string", "pattern": "^(a+)+$" + "x" * 600}, "pattern"),
    ],
)
def test_malicious_schemas_are_refused_and_the_server_keeps_serving(client, schema, needle):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="default", messages=ASK, response_format=fmt)
    assert needle in info.value.body["message"] and info.value.body["param"] == "response_format"
    assert _chat(client, messages=ASK, max_tokens=2).usage.completion_tokens > 0
