"""A tool server built on the official MCP Python SDK (mcp<2, FastMCP), for the end-to-end tests.

Usage: python mcp_server.py stdio
       python mcp_server.py streamable-http PORT    (endpoint /mcp)
       python mcp_server.py sse PORT                (legacy HTTP+SSE, endpoint /sse)
"""

import asyncio
import os
import sys

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("sage-test-peer", host="127.0.0.1")

_waiting: dict[str, asyncio.Event] = {}


@mcp.tool(structured_output=False)
def echo(text: str) -> str:
    """Returns the text it was given."""
    return text


@mcp.tool(structured_output=False)
def repeat(text: str, times: int) -> str:
    """Returns the text repeated `times` times (a large result on demand)."""
    return text * times


@mcp.tool(structured_output=False)
def add(a: int, b: int) -> str:
    """Adds two integers and returns {"sum": a + b} as JSON text."""
    return '{"sum": %d}' % (a + b)


@mcp.tool(structured_output=False)
async def sleep(seconds: float) -> str:
    """Sleeps, then says how long it slept."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@mcp.tool(structured_output=False)
async def rendezvous(key: str, timeout: float = 5.0) -> str:
    """Answers "met" only when a second call with the same key arrives while the first waits."""
    if key in _waiting:
        _waiting.pop(key).set()
        return "met"
    event = asyncio.Event()
    _waiting[key] = event
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return "met"
    except asyncio.TimeoutError:
        _waiting.pop(key, None)
        return "alone"


@mcp.tool(structured_output=False)
def complete_task(result: str = "") -> str:
    """Says the task is complete (as Sage's own MCP server offers it); ends a simple-mode run."""
    return f"completed: {result}"


@mcp.tool(structured_output=False)
def fail(message: str = "scripted tool failure") -> str:
    """Always raises."""
    raise ValueError(message)


@mcp.tool(structured_output=False)
async def die() -> str:
    """Kills the server process in the middle of the call."""
    await asyncio.sleep(0.2)
    os._exit(1)


if __name__ == "__main__":
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if len(sys.argv) > 2:
        mcp.settings.port = int(sys.argv[2])
    mcp.run(transport=transport)
