"""The official `openai` Python client against `lab serve`, unchanged: completions and chat,
streamed and not, the model list, and errors raised as the client's own exception types.

Run by tests/serve_openai.rs as `python3 openai_client.py http://127.0.0.1:PORT`; exits 0 when
every check holds, else raises.
"""

import sys

import openai

base = sys.argv[1] + "/v1"
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)

models = client.models.list()
assert [m.id for m in models.data] == ["tiny"], models

greedy = dict(temperature=0, max_tokens=12, extra_body={"ignore_eos": True})

c = client.completions.create(model="tiny", prompt="Hello", **greedy)
assert c.object == "text_completion", c
assert c.choices[0].finish_reason == "length", c
assert c.usage.completion_tokens == 12 and c.usage.prompt_tokens == 5, c.usage
pieces = [
    ch.choices[0].text
    for ch in client.completions.create(model="tiny", prompt="Hello", stream=True, **greedy)
    if ch.choices
]
assert "".join(pieces) == c.choices[0].text, (pieces, c.choices[0].text)

messages = [{"role": "user", "content": "Hi there"}]
r = client.chat.completions.create(model="tiny", messages=messages, **greedy)
assert r.choices[0].message.role == "assistant", r
assert r.usage.completion_tokens == 12, r.usage
stream = client.chat.completions.create(
    model="tiny", messages=messages, stream=True, stream_options={"include_usage": True}, **greedy
)
text, usage = "", None
for ch in stream:
    if ch.usage is not None:
        usage = ch.usage
    for choice in ch.choices:
        text += choice.delta.content or ""
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert usage is not None and usage.completion_tokens == 12, usage

try:
    client.completions.create(model="tiny", prompt="Hi", temperature=-1)
    raise AssertionError("temperature -1 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "temperature" in str(e), e
try:
    client.completions.create(model="gpt-4", prompt="Hi")
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404, e

print("openai", openai.__version__, "ok")
