"""Typed keys of the shared objects on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..config import Settings
from ..core.clock import Clock
from ..core.desk import Desk
from ..core.ports import Store
from .link import DeskLink

if TYPE_CHECKING:
    from .role import DeskRole
    from .sockets import Sockets

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
DESK = web.AppKey("desk", Desk)
# The desk as handlers call it, in this process or in the one that runs it.
LINK = web.AppKey("link", DeskLink)
SOCKETS: web.AppKey[Sockets] = web.AppKey("sockets")
ROLE: web.AppKey[DeskRole] = web.AppKey("role")
