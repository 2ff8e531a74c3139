"""The real ``dic`` command line as a subprocess, awaited without blocking the event loop
(tests serve nodes in the same loop, which must keep answering while the command runs)."""

from __future__ import annotations

import asyncio
import sys


async def dic(*args: str, timeout_s: float = 120) -> tuple[int, str, str]:
    """``python -m dic_connector.cli *args``: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dic_connector.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
