"""chatd serve's garbage-collector policy (chatd/memory.py), in a process of its own so
that the test run keeps Python's defaults."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import gc, weakref
from chatd import memory

memory.tune()
assert gc.get_threshold()[0] == memory.GEN0

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

# Alive at a full collection: frozen with the survivors.
kept = cycle()
gc.collect()
assert gc.get_freeze_count() > 0
dead = weakref.ref(kept)
del kept
# Now garbage, but frozen: ordinary collections do not walk it...
gc.collect()
assert dead() is not None
# ...the periodic full collection does.
took = memory.full_collection()
assert dead() is None and took >= 0
# Garbage made after the last freeze is collected as usual.
young = weakref.ref(cycle())
gc.collect(0)
assert young() is None
print("ok")
'''


def test_survivors_are_frozen_and_the_full_collection_frees_what_died_since() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
