"""Benchmarks for chatd, run with ``make bench`` (``python -m bench``).

Every benchmark starts the servers it measures as real processes on 127.0.0.1, runs for a
bounded time, stops each process it started by its PID and removes its temporary folder.
``python -m bench --list`` names them; ``--only NAME`` runs one.
"""
