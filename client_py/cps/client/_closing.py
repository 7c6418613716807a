"""Leaving a ``with`` block: close, but never hide the body's exception."""

from __future__ import annotations

from collections.abc import Awaitable, Callable


def close_on_exit(exc: BaseException | None, close: Callable[[], None], what: str) -> None:
    if exc is None:
        close()
        return
    try:
        close()
    except Exception as close_error:  # keep the body's exception in front
        exc.add_note(f"{what} also failed: {close_error}")


async def close_on_exit_async(
    exc: BaseException | None, close: Callable[[], Awaitable[None]], what: str
) -> None:
    if exc is None:
        await close()
        return
    try:
        await close()
    except Exception as close_error:  # keep the body's exception in front
        exc.add_note(f"{what} also failed: {close_error}")
