"""Several chatd processes on one desk: python-socketio's Redis manager for the fan-out of
events, and the calls of the processes that do not run the desk to the one that does
(docs/design.md#several-processes)."""
