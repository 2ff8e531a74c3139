"""A party process for end-to-end tests: connects over mutual TLS and multiplies in a loop.

    python party_process.py DEPLOYMENT_DIR INDEX TIMEOUT_S

Prints ``ready`` once connected and the session is open, then one JSON line when it stops:
``{"error": "PeerError", "message": ..., "after_s": ...}`` or ``{"rounds": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from mpc.errors import PeerError
from mpc.local import LocalDeployment
from mpc.protocols import arith
from mpc.ring import as_ring
from mpc.sharing import share

SESSION = b"e2e-session-0001"


async def main(directory: Path, index: int, timeout_s: float) -> dict[str, object]:
    party = await LocalDeployment.load(directory).connect(index, timeout_s=timeout_s)
    views = share(as_ring(np.arange(1000)), prg=None)  # each process its own (fine: no check)
    mine = views[index]
    rounds = 0
    last_ok = time.monotonic()
    try:
        async with party.session(SESSION) as s:
            print("ready", flush=True)
            while rounds < 1_000_000:
                await arith.mul(s, mine, mine)
                rounds += 1
                last_ok = time.monotonic()
                await asyncio.sleep(0.01)
    except PeerError as exc:
        return {"error": "PeerError", "message": str(exc),
                "after_s": time.monotonic() - last_ok, "rounds": rounds}
    finally:
        await party.close()
    return {"rounds": rounds}


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
    print(json.dumps(result), flush=True)
