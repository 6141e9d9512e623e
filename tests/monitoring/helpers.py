"""HTTP helpers for the monitoring endpoints of a running chatd."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from chatd.core.models import Role
from tests.conftest import Chatd


async def http(
    chatd: Chatd, method: str, path: str, token: str | None = None, json: Any = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, chatd.url + path, headers=headers, json=json) as r:
            if r.content_type == "application/json":
                body: Any = await r.json()
            else:
                body = await r.text()
            return r.status, body, dict(r.headers)


async def scrape(chatd: Chatd, token: str | None = None) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of /metrics: (name, labels) -> value."""
    status, text, _ = await http(chatd, "GET", "/metrics", token)
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


async def lead_token(chatd: Chatd, email: str = "lee@example.com") -> str:
    await chatd.add_engineer(email, name="Lee", role=Role.LEAD)
    return await chatd.login(email)
