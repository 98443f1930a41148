"""The local Letta harness and its scripted model.

Most tests run the scripted model in-process (a thread, free port) and talk plain HTTP to it;
one checks that the harness brings up a real Letta server that answers its health check
(first run: installs letta into $LETTACHAT_LOCAL_DIR, ~1 min; later runs reuse the server).
"""

from __future__ import annotations

import json
import time

import pytest

httpx = pytest.importorskip("httpx")

from devtools.local_letta import fake_model, harness  # noqa: E402

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def model_url():
    srv = fake_model.make_server("127.0.0.1", 0, delay=0.0, slow_delay=0.0, log_path=None)
    fake_model.serve_in_thread(srv)
    try:
        yield srv.base_url
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture()
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def _body(text, *, stream=True, tools=None, messages=None):
    body = {
        "model": fake_model.DEFAULT_MODEL_ID,
        "stream": stream,
        "messages": messages
        or [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}],
    }
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in tools
        ]
    return body


def _stream(client, url, body):
    """POST a streaming chat completion; return ([(t, delta), ...], saw_done)."""
    events, done = [], False
    with client.stream("POST", url + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["connection"].lower() == "close"
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if chunk["choices"]:
                events.append((time.monotonic(), chunk["choices"][0]["delta"]))
    return events, done


def _contents(events):
    return [d["content"] for _, d in events if d.get("content")]


# --------------------------------------------------------------------------- scripted model


def test_models_and_health(client, model_url):
    r = client.get(model_url + "/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["lettachat-demo"]
    assert r.headers["connection"].lower() == "close"
    assert client.get(model_url.removesuffix("/v1") + "/health").json()["ok"] is True


def test_model_id_must_not_trigger_responses_api():
    for bad in ("gpt-5-mini", "o1", "o3-mini", "o4-mini"):
        with pytest.raises(ValueError):
            fake_model.Settings(model_id=bad)


def test_default_streams_one_word_per_chunk(client, model_url):
    events, done = _stream(client, model_url, _body("hello brave new world"))
    assert done
    assert _contents(events) == ["Echo:", " hello", " brave", " new", " world"]


def test_non_streaming_echo(client, model_url):
    r = client.post(model_url + "/chat/completions", json=_body("hi there", stream=False))
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Echo: hi there"
    assert choice["finish_reason"] == "stop"


def test_think_streams_reasoning_content_first(client, model_url):
    events, done = _stream(client, model_url, _body("[[think:weighing the options]] what now"))
    assert done
    kinds = [
        ("reasoning" if d.get("reasoning_content") else "content")
        for _, d in events
        if d.get("reasoning_content") or d.get("content")
    ]
    assert kinds == ["reasoning"] * 3 + ["content"] * 3
    assert "".join(d.get("reasoning_content", "") for _, d in events) == "weighing the options"
    assert "".join(_contents(events)) == "Echo: what now"


@pytest.mark.parametrize(
    "status,etype",
    [(500, "server_error"), (429, "rate_limit_error"), (401, "authentication_error")],
)
def test_fail_answers_with_status_and_openai_error(client, model_url, status, etype):
    r = client.post(model_url + "/chat/completions", json=_body(f"[[fail:{status}]] boom"))
    assert r.status_code == status
    assert r.json()["error"]["type"] == etype
    assert r.headers["x-should-retry"] == "false"


def test_fail_mid_drops_the_connection(client, model_url):
    got = []
    body = _body("[[fail_mid]] one two three four five six")
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", model_url + "/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            got.append(line)
    assert "data: [DONE]" not in got
    contents = [
        json.loads(x[6:])["choices"][0]["delta"].get("content")
        for x in got
        if x.startswith("data: {")
    ]
    assert [c for c in contents if c] == ["Echo:", " one", " two"]


def test_stall_pauses_after_first_token(client, model_url):
    events, done = _stream(client, model_url, _body("[[stall:0.4]] wait for it"))
    assert done
    content_events = [(t, d["content"]) for t, d in events if d.get("content")]
    assert [c for _, c in content_events] == ["Echo:", " wait", " for", " it"]
    assert content_events[1][0] - content_events[0][0] >= 0.35
    assert content_events[3][0] - content_events[1][0] < 0.35


def test_then_stall_pauses_only_the_reply_after_a_tool_result(client, model_url):
    text = '[[tool:lookup {"q": 1}]] [[then_stall:0.4]] go'
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    after_the_tool = [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "found it"},
    ]
    events, done = _stream(client, model_url, _body(text, messages=after_the_tool))
    assert done
    content_events = [(t, d["content"]) for t, d in events if d.get("content")]
    assert "".join(c for _, c in content_events) == "Tool lookup returned: found it"
    assert content_events[1][0] - content_events[0][0] >= 0.35
    # Without a tool result it is no stall, and not echoed.
    events, done = _stream(client, model_url, _body("[[then_stall:0.4]] plain"))
    content_events = [(t, d["content"]) for t, d in events if d.get("content")]
    assert [c for _, c in content_events] == ["Echo:", " plain"]
    assert content_events[1][0] - content_events[0][0] < 0.35


def test_wait_says_nothing_at_all_before_the_first_token(client, model_url):
    started = time.monotonic()
    events, done = _stream(client, model_url, _body("[[wait:0.4]] later"))
    assert done
    content_events = [(t, d["content"]) for t, d in events if d.get("content")]
    assert [c for _, c in content_events] == ["Echo:", " later"]
    assert content_events[0][0] - started >= 0.35


def test_markdown_sample_streamed_token_by_token(client, model_url):
    events, done = _stream(client, model_url, _body("[[markdown]]"))
    assert done
    parts = _contents(events)
    assert "".join(parts) == fake_model.MARKDOWN_SAMPLE
    assert len(parts) > 20
    text = "".join(parts)
    assert text.startswith("# ") and "**" in text and "\n- " in text and "```python\n" in text


def test_long_reply_has_n_words(client, model_url):
    events, _ = _stream(client, model_url, _body("[[long:57]]"))
    assert len("".join(_contents(events)).split()) == 57


def test_slow_pads_to_40_words(client, model_url):
    events, _ = _stream(client, model_url, _body("go slow please"))
    text = "".join(_contents(events))
    assert text.startswith("Echo: go slow please")
    assert len(text.split()) == 40


def test_tool_call_then_tool_result(client, model_url):
    body = _body(
        '[[tool:memory_insert {"label": "human", "new_string": "likes tea"}]] remember',
        tools=["memory_insert"],
    )
    events, done = _stream(client, model_url, body)
    assert done
    calls = [tc for _, d in events for tc in d.get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "memory_insert"
    args = json.loads("".join(tc["function"].get("arguments") or "" for tc in calls))
    assert args == {"label": "human", "new_string": "likes tea"}

    history = body["messages"] + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "memory_insert", "arguments": json.dumps(args)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "OK, inserted"},
    ]
    events, _ = _stream(client, model_url, _body("", tools=["memory_insert"], messages=history))
    assert "".join(_contents(events)) == "Tool memory_insert returned: OK, inserted"


def test_tool_directive_ignored_when_tool_not_offered(client, model_url):
    events, _ = _stream(client, model_url, _body("[[tool:nope {}]] hi"))
    assert "".join(_contents(events)) == "Echo: hi"


def test_block_recites_memory_block(client, model_url):
    system = (
        "<memory_blocks>\n<human>\n<description>x</description>\n"
        "<value>\nName: Ada\n</value>\n</human>\n</memory_blocks>"
    )
    body = _body(
        "",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "[[block:human]]"},
        ],
    )
    events, _ = _stream(client, model_url, body)
    assert "".join(_contents(events)) == "human=Name: Ada"


def test_embeddings(client, model_url):
    r = client.post(
        model_url + "/embeddings", json={"model": "e", "input": ["a", "b"], "dimensions": 8}
    )
    data = r.json()["data"]
    assert [len(d["embedding"]) for d in data] == [8, 8]
    assert data[0]["embedding"] != data[1]["embedding"]


def test_tokens_round_trip():
    for text in ("a b  c", fake_model.MARKDOWN_SAMPLE, " lead", "trail \n"):
        assert "".join(fake_model.tokens(text)) == text


# --------------------------------------------------------------------------- real Letta server


@pytest.fixture(scope="module")
def letta_url():
    return harness.start()


def test_letta_server_is_healthy(letta_url):
    with httpx.Client(timeout=10, trust_env=False) as c:
        r = c.get(letta_url + "/v1/health/")
    assert r.status_code == 200
    assert r.json() == {"version": harness.LETTA_VERSION, "status": "ok"}
    assert harness.is_healthy(letta_url)
    st = harness.status()
    assert st["healthy"] and st["processes"]["postgres"]["running"]


def test_letta_keeps_its_database_connections_open_between_requests(letta_url):
    """Letta runs on a pool of connections to its database, not a new one per query (its
    default): each connect cost ~10 ms, and once one hung for 60 s and failed a request."""
    cfg = harness.config()
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.get(
            letta_url + "/v1/agents/", headers={"Authorization": f"Bearer {harness.api_key()}"}
        )
    assert r.status_code == 200
    held = harness._pg(
        cfg,
        "psql",
        "-h", "127.0.0.1", "-p", str(cfg.pg_port), "-U", "letta", "-d", "letta", "-tAc",
        "select count(*) from pg_stat_activity where datname = 'letta' and pid <> pg_backend_pid()",
        what="psql",
    ).stdout.strip()  # fmt: skip
    assert int(held) >= 1, "Letta holds no connection to its database once a request is done"


LOG_EXCERPT = """\
Letta.letta.server.rest_api.routers.v1.conversations - INFO - [Interrupt] Cancel request received
/x/site-packages/letta/agents/letta_agent_v2.py:961: DeprecationWarning: deprecated
  model_handle=self.agent_state.llm_config.handle,
Letta.letta.server.rest_api.app - ERROR - Unhandled error: TimeoutError:
Traceback (most recent call last):
  File "/x/site-packages/asyncpg/connect_utils.py", line 802, in _create_ssl_connection
    tr, pr = await loop.create_connection(
  File "/x/lib/python3.11/asyncio/selector_events.py", line 634, in sock_connect
    return await fut
           ^^^^^^^^^
asyncio.exceptions.CancelledError

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/x/site-packages/starlette/routing.py", line 75, in app
    response = await f(request)
  File "/x/site-packages/letta/server/rest_api/routers/v1/conversations.py", line 884, in cancel
    conversation = await conversation_manager.get_conversation_by_id(
  File "/x/lib/python3.11/asyncio/timeouts.py", line 115, in __aexit__
    raise TimeoutError from exc_val
TimeoutError
httpx - INFO - HTTP Request: POST http://127.0.0.1:8399/v1/chat/completions "HTTP/1.1 200 OK"
Traceback-looking text after an INFO record is not an error
"""


def test_a_failed_tests_report_shows_lettas_errors_and_where_they_happened():
    assert harness.errors_in_log(LOG_EXCERPT) == [
        "Letta.letta.server.rest_api.app - ERROR - Unhandled error: TimeoutError:",
        "Traceback (most recent call last):",
        '  File "/x/lib/python3.11/asyncio/selector_events.py", line 634, in sock_connect',
        "asyncio.exceptions.CancelledError",
        "The above exception was the direct cause of the following exception:",
        "Traceback (most recent call last):",
        '  File "letta/server/rest_api/routers/v1/conversations.py", line 884, in cancel',
        '  File "/x/lib/python3.11/asyncio/timeouts.py", line 115, in __aexit__',
        "TimeoutError",
    ]
