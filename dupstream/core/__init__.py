"""The leaf of contracts: the exception hierarchy, the event and verdict schemas.

Everything else in dupstream may import from here; nothing here imports anything of dupstream's.
"""
