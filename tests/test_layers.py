"""The in-memory channel layer sweeps for expired messages at most once a second."""

from __future__ import annotations

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
