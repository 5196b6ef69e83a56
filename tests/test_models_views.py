"""Several models at once: the catalog from the configuration, GET /models, the model of a
thread and of each reply, the composer's picker, health per model."""

from __future__ import annotations

import re
from collections.abc import Iterator

import gevent
import pytest

from app import create_app
from bench.fake_anthropic import FakeAnthropic
from bench.fake_upstream import FakeUpstream, Reply
from config import TestConfig
from llm import DemoProvider, ModelCatalog, make_models
from llm.catalog import parse_models
from models import Message, Thread, db
from tests.conftest import JSON, csrf_of, new_thread

ANTHROPIC_KEY = "sk-ant-test-views-key-0123456789"
MODELS = "openai:fake-model,anthropic:claude-fake=Claude Fake,demo"


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture
def multi(tmp_path, upstream, claude):
    app = create_app(TestConfig, {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
        "CHAT_MODELS": MODELS, "OPENAI_BASE_URL": upstream.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "ANTHROPIC_BASE_URL": claude.url, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    with app.app_context():
        db.create_all()
    yield app
    app.extensions["relay"].shutdown(timeout=2)
    claude.clear_queue()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def multi_client(multi):
    return multi.test_client()


def post(client, token, thread_id, content, **extra):
    return client.post(f"/threads/{thread_id}/messages", json={"content": content, **extra},
                       headers={"X-CSRF-Token": token, **JSON})


def finish(client, sent: dict) -> str:
    """Stream the reply to its end (in this process) and return the decoded text."""
    from tests.conftest import decoded, sse_events

    body = client.get(sent["stream_url"]).data
    assert b"event: done" in body, body[-400:]
    return decoded(sse_events(body))


# -- GET /models -----------------------------------------------------------------------------
def test_get_models_lists_every_configured_model_default_first(multi_client):
    answer = multi_client.get("/models")
    assert answer.status_code == 200
    assert answer.json == [
        {"id": "fake-model", "provider": "openai", "label": "fake-model", "vision": False,
         "context": 128000},
        {"id": "claude-fake", "provider": "anthropic", "label": "Claude Fake", "vision": True,
         "context": 128000},
        # The demo model acknowledges attachments: it counts as reading images.
        {"id": "demo", "provider": "demo", "label": "Demo model (offline)", "vision": True,
         "context": 128000}]


def test_one_model_configured_the_old_way_is_the_only_choice(client):
    assert client.get("/models").json == [
        {"id": "demo", "provider": "demo", "label": "Demo model (offline)", "vision": True,
         "context": 128000}]
    page = client.get("/").text
    assert 'name="model"' not in page  # no picker when there is nothing to pick


# -- the model of a thread and of each reply --------------------------------------------------
def test_each_reply_is_written_by_its_own_model_and_records_it(multi, multi_client, upstream,
                                                               claude):
    token = csrf_of(multi_client)
    thread_id = new_thread(multi_client, token)
    claude.enqueue(Reply(tokens=["Claude ", "wrote ", "this 🌍"]))
    sent = post(multi_client, token, thread_id, "Hi Claude", model="claude-fake")
    assert sent.status_code == 201
    assert sent.json["assistant_message"]["model"] == "claude-fake"
    assert finish(multi_client, sent.json) == "Claude wrote this 🌍"
    assert claude.requests[-1].body["messages"][-1] == {"role": "user", "content": "Hi Claude"}

    prompt = upstream.script(Reply(tokens=["OpenAI ", "wrote ", "that"]))
    sent = post(multi_client, token, thread_id, prompt, model="fake-model")
    assert finish(multi_client, sent.json) == "OpenAI wrote that"
    assert upstream.records_for(prompt)[-1].body["model"] == "fake-model"
    with multi.app_context():
        replies = db.session.scalars(db.select(Message).where(
            Message.thread_id == thread_id, Message.role == "assistant")
            .order_by(Message.id)).all()
        assert [(m.model, m.content, m.status) for m in replies] == [
            ("claude-fake", "Claude wrote this 🌍", "complete"),
            ("fake-model", "OpenAI wrote that", "complete")]


def test_the_thread_remembers_the_model_chosen_for_its_next_prompts(multi, multi_client,
                                                                    claude):
    token = csrf_of(multi_client)
    thread_id = new_thread(multi_client, token)
    first = post(multi_client, token, thread_id, "One", model="claude-fake")
    assert first.json["assistant_message"]["model"] == "claude-fake"
    finish(multi_client, first.json)
    second = post(multi_client, token, thread_id, "Two")  # no model: the thread's choice
    assert second.json["assistant_message"]["model"] == "claude-fake"
    finish(multi_client, second.json)
    with multi.app_context():
        assert db.session.get(Thread, thread_id).model == "claude-fake"
    thread = multi_client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]
    assert thread["model"] == "claude-fake"
    # The page's picker has the thread's model selected, and the reply shows its model.
    page = multi_client.get(f"/threads/{thread_id}").text
    picker = re.search(r'<select id="composer-model" name="model">(.*?)</select>', page, re.S)
    assert picker is not None
    assert re.search(r'<option value="claude-fake" selected[^>]*>Claude Fake</option>', picker[1])
    assert picker[1].count(" selected") == 1
    assert 'class="message-role">claude-fake<' in page


def test_a_new_thread_uses_the_default_model(multi_client):
    token = csrf_of(multi_client)
    sent = post(multi_client, token, new_thread(multi_client, token), "Hello")
    assert sent.json["assistant_message"]["model"] == "fake-model"
    page = multi_client.get("/").text
    assert re.search(r'<option value="fake-model" selected[ >]', page)


def test_the_home_composer_takes_a_model_for_the_new_thread(multi, multi_client):
    token = csrf_of(multi_client)
    answer = multi_client.post("/threads", json={"content": "Hi", "model": "demo"},
                               headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 201
    assert answer.json["thread"]["model"] == "demo"
    assert answer.json["assistant_message"]["model"] == "demo"


@pytest.mark.parametrize("model", ["gpt-nonexistent", "", 7])
def test_an_unknown_model_is_a_400_naming_the_choices_that_stores_nothing(multi, multi_client,
                                                                          model):
    token = csrf_of(multi_client)
    thread_id = new_thread(multi_client, token)
    answer = post(multi_client, token, thread_id, "Hello", model=model)
    if model == "":  # empty means "no choice": the default
        assert answer.status_code == 201
        return
    assert answer.status_code == 400
    message = answer.json["message"]
    assert "Unknown model" in message
    assert "fake-model" in message and "claude-fake" in message and "demo" in message
    with multi.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Message)) == 0
        assert db.session.get(Thread, thread_id).model is None
    # The home composer makes no thread for an unknown model either.
    before = multi_client.get("/", headers=JSON).json
    answer = multi_client.post("/threads", json={"content": "Hi", "model": "nope"},
                               headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400
    assert multi_client.get("/", headers=JSON).json == before


def test_a_model_by_provider_and_name_is_found_too(multi_client):
    token = csrf_of(multi_client)
    sent = post(multi_client, token, new_thread(multi_client, token), "Hi",
                model="anthropic:claude-fake")
    assert sent.status_code == 201 and sent.json["assistant_message"]["model"] == "claude-fake"


def test_a_reply_whose_model_is_gone_is_written_by_the_default(multi, multi_client, upstream):
    token = csrf_of(multi_client)
    thread_id = new_thread(multi_client, token)
    sent = post(multi_client, token, thread_id, "Hi").json
    with multi.app_context():
        db.session.get(Message, sent["assistant_message"]["id"]).model = "retired-model"
        db.session.commit()
    finish(multi_client, sent)
    with multi.app_context():
        reply = db.session.get(Message, sent["assistant_message"]["id"])
        assert (reply.model, reply.status) == ("fake-model", "complete")


# -- health per model --------------------------------------------------------------------------
def test_health_is_per_model(multi_client):
    answer = multi_client.get("/models/health?model=claude-fake")
    assert answer.status_code == 200
    assert answer.json["ok"] is True and answer.json["provider"] == "anthropic"
    assert answer.json["id"] == "claude-fake"
    assert multi_client.get("/models/health").json["id"] == "fake-model"
    unknown = multi_client.get("/models/health?model=nope", headers=JSON)
    assert unknown.status_code == 400 and "claude-fake" in unknown.json["message"]


def test_a_model_whose_server_is_down_is_unhealthy_alone(tmp_path):
    app = create_app(TestConfig, {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
        "CHAT_MODELS": "demo,anthropic:claude-gone",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    try:
        client = app.test_client()
        down = client.get("/models/health?model=claude-gone").json
        assert down["ok"] is False and "127.0.0.1:9" in down["message"]
        assert ANTHROPIC_KEY not in str(down)
        assert client.get("/models/health?model=demo").json["ok"] is True
    finally:
        app.extensions["relay"].shutdown(timeout=2)


# -- the configuration -------------------------------------------------------------------------
def test_chat_models_entries_parse_with_labels():
    entries = parse_models(" openai:gpt-4o-mini , anthropic:claude-sonnet-4-5=Claude Sonnet,"
                           "azure:my-deployment,demo")
    assert [(e.provider, e.model, e.label) for e in entries] == [
        ("openai", "gpt-4o-mini", None), ("anthropic", "claude-sonnet-4-5", "Claude Sonnet"),
        ("azure", "my-deployment", None), ("demo", "demo", None)]


@pytest.mark.parametrize("setting, words", [
    ("cohere:command-r", "unknown provider 'cohere'"),
    ("openai:", "names no model"),
    ("anthropic:*", "only openai:*"),
    (" , ", "lists no model"),
])
def test_bad_chat_models_say_what_is_wrong(setting, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_models(setting)


def test_a_provider_without_its_settings_is_refused_at_start():
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        make_models({"CHAT_MODELS": "azure:my-deployment"})
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        make_models({"CHAT_MODELS": "anthropic:claude-sonnet-4-5"})


def test_the_same_name_from_two_providers_gets_a_provider_prefixed_id():
    catalog = make_models({"CHAT_MODELS": "openai:gpt-4o,azure:gpt-4o",
                           "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
                           "AZURE_OPENAI_API_KEY": "k" * 32})
    assert [(c.id, c.provider.name) for c in catalog.choices()] == [
        ("gpt-4o", "openai"), ("azure:gpt-4o", "azure")]
    assert catalog.get("azure:gpt-4o").provider.name == "azure"
    assert catalog.get("openai:gpt-4o").provider.name == "openai"


def test_the_openai_servers_own_list_joins_in_the_background(upstream):
    catalog = make_models({"CHAT_MODELS": "demo,openai:*", "OPENAI_BASE_URL": upstream.url,
                           "MODEL_LIST_TTL_S": 60})
    first = catalog.choices()  # never waits: the listing runs in a greenlet of its own
    assert [c.id for c in first] == ["demo"]
    listed = catalog.choices(wait_s=5.0)
    assert [(c.id, c.provider.name) for c in listed] == [("demo", "demo"),
                                                         ("fake-model", "openai")]
    asked = len([r for r in upstream.requests if r.path == "/v1/models"])
    catalog.choices()
    gevent.sleep(0.05)
    assert len([r for r in upstream.requests if r.path == "/v1/models"]) == asked  # cached


def test_a_server_without_a_list_leaves_the_configured_models():
    silent = FakeUpstream().start()
    try:
        url = silent.url.replace("/v1", "/nothing-here")
        catalog = make_models({"CHAT_MODELS": "demo,openai:*", "OPENAI_BASE_URL": url})
        assert [c.id for c in catalog.choices(wait_s=5.0)] == ["demo"]
    finally:
        silent.stop()


def test_a_single_injected_provider_is_the_catalog():
    provider = DemoProvider(token_delay_s=0)
    catalog = make_models({}, provider)
    assert isinstance(catalog, ModelCatalog) and catalog.default.provider is provider
