"""The in-memory channel layer: it sweeps for expired messages at most once a second, and a
group send is a send to each member in turn."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer

from lettachat import layers
from lettachat.layers import InMemoryChannelLayer


async def test_many_group_sends_and_receives_sweep_once(monkeypatch):
    layer = InMemoryChannelLayer(capacity=5000)
    sweeps = 0
    original = ChannelsInMemoryChannelLayer._clean_expired

    def counted(self):
        nonlocal sweeps
        sweeps += 1
        original(self)

    monkeypatch.setattr(ChannelsInMemoryChannelLayer, "_clean_expired", counted)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    for n in range(200):
        await layer.group_send("g", {"type": "conversation.html", "n": n})
    assert [(await layer.receive(channel))["n"] for _ in range(200)] == list(range(200))
    assert sweeps == 1


async def test_expired_messages_still_expire_at_the_next_sweep(monkeypatch):
    layer = InMemoryChannelLayer(expiry=-1)  # every message is expired as soon as it is sent
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "conversation.html"})  # sweeps first, then sends
    assert channel in layer.channels
    layer._clean_expired()  # within the interval: no sweep
    assert channel in layer.channels
    monkeypatch.setattr(layers, "SWEEP_INTERVAL", 0.0)
    layer._clean_expired()
    assert channel not in layer.channels
    assert channel not in layer.groups.get("g", {})  # an expired message leaves its groups


async def test_a_group_send_reaches_every_member_in_order_past_a_full_one():
    layer = InMemoryChannelLayer(capacity=2)
    full, first, second = [await layer.new_channel() for _ in range(3)]
    for channel in (full, first, second):
        await layer.group_add("g", channel)
    await layer.send(full, {"type": "x", "n": -2})
    await layer.send(full, {"type": "x", "n": -1})
    with pytest.raises(ChannelFull):
        await layer.send(full, {"type": "x", "n": 0})
    sent = {"type": "x", "n": 0, "pks": [1]}
    await layer.group_send("g", sent)
    sent["pks"].append(2)  # what the sender does with its message afterwards reaches no one
    await layer.group_send("g", {"type": "x", "n": 1, "pks": []})
    for channel in (first, second):
        received = [await layer.receive(channel) for _ in range(2)]
        assert [m["n"] for m in received] == [0, 1]
        assert received[0]["pks"] == [1]
    assert [(await layer.receive(full))["n"] for _ in range(2)] == [-2, -1]
    assert not layer.channels, "a channel whose messages are all read is let go"


async def test_a_group_send_starts_no_task():
    layer = InMemoryChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("g", channel)
    tasks = len(asyncio.all_tasks())
    started = []
    original = asyncio.create_task

    def counted(*args, **kwargs):
        started.append(args)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "create_task", counted)
        await layer.group_send("g", {"type": "x"})
    assert not started and len(asyncio.all_tasks()) == tasks
    assert [(await layer.receive(c))["type"] for c in channels] == ["x"] * 3
