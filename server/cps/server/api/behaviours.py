"""Running a grpc method behaviour from an interceptor, whichever way the
servicer wrote it (shared by the request gate and the call metrics)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any


async def responses(result: Any) -> AsyncIterator[Any]:
    """What a streaming behaviour answers, whichever way it is written: an
    async generator, a coroutine writing through the context, an iterator."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result
    else:
        for response in result:
            yield response


async def answer(result: Any) -> Any:
    """What a unary behaviour answers, a coroutine or a plain function."""
    return await result if inspect.isawaitable(result) else result
