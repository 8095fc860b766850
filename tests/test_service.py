from pathlib import Path

import pytest

from localxai.chat import ChatRequest, Message, Role, TextPart
from localxai.engines.fake import FakeEngine
from localxai.errors import ConfigError, ModelNotFound
from localxai.service import ChatService


def test_alias_to_unknown_model_is_a_startup_error() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        ChatService([FakeEngine()], aliases=[("grok-4", "nope")])


def test_alias_may_not_shadow_a_model() -> None:
    with pytest.raises(ConfigError, match="shadows"):
        ChatService([FakeEngine()], aliases=[("fake-model", "fake-model")])


async def test_unknown_model_is_not_found() -> None:
    service = ChatService([FakeEngine()], aliases=[("grok-4", "fake-model")])
    request = ChatRequest(model="grok-3", messages=(Message(Role.USER, (TextPart("hi"),)),))
    with pytest.raises(ModelNotFound):
        await service.complete(request)


async def test_collected_completion_counts_all_choices() -> None:
    service = ChatService([FakeEngine(reply="a b c")])
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart("hi"),)),), n=2)
    completion = await service.complete(request)
    assert [c.text for c in completion.choices] == ["a b c", "a b c"]
    assert completion.usage.completion_tokens == 6


async def test_rate_windows_follow_the_clock(tmp_path: Path) -> None:
    """Limits count per clock minute; with a clock in hand the test needs no sleeping."""
    from localxai.accounting import Accounting
    from localxai.auth import ApiKey
    from localxai.errors import ResourceExhausted
    from localxai.store.store import Store, sqlite_url

    now = [600.0 * 60 + 50]  # 10 s before a minute boundary
    accounting = Accounting(Store(sqlite_url(tmp_path)), clock=lambda: now[0])
    key = ApiKey(key_id="k", redacted="xai-...k", name="k", created=0, modified=0, rpm=2)
    await accounting.admit(key, "m")
    await accounting.admit(key, "m")
    with pytest.raises(ResourceExhausted) as refused:
        await accounting.admit(key, "m")
    assert refused.value.retry_after == 10
    now[0] += 10  # the next minute
    await accounting.admit(key, "m")
