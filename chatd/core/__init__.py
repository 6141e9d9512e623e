"""The desk: matching, sessions and messages, with no knowledge of sockets or SQL.

See docs/design.md for the rules this package implements.
"""
