"""Replica manager core: checkpoints, sections, handles and the seed's rules.

Pure Python with no grpc import, run on one asyncio event loop so mutations
need no locks.
"""
