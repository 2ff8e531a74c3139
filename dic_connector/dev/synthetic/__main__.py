"""Write synthetic FHIR data as NDJSON + Bulk manifest.

``python -m dic_connector.dev.synthetic pilot --site tm OUT_DIR``
``python -m dic_connector.dev.synthetic phame --patients 100000 --seed 1 OUT_DIR``
"""

from __future__ import annotations

import argparse
import json

from dic_connector.dev.synthetic.ndjson import write_bulk
from dic_connector.dev.synthetic.phame import phame_resources
from dic_connector.dev.synthetic.pilot import pilot_resources


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dic_connector.dev.synthetic",
                                     description="synthetic FHIR R4 data as NDJSON")
    sub = parser.add_subparsers(dest="kind", required=True)
    pilot = sub.add_parser("pilot", help="the 24+24 patients of the LMU/Gemelli pilot")
    pilot.add_argument("--site", choices=["tm", "tr"], default=None)
    pilot.add_argument("out")
    phame = sub.add_parser("phame", help="a PHAME-like site of any size")
    phame.add_argument("--patients", type=int, default=1000)
    phame.add_argument("--seed", type=int, default=0)
    phame.add_argument("--site", default="s1")
    phame.add_argument("out")
    args = parser.parse_args(argv)
    if args.kind == "pilot":
        manifest = write_bulk(args.out, pilot_resources(args.site))
    else:
        manifest = write_bulk(args.out, phame_resources(args.patients, args.seed, args.site))
    print(json.dumps(manifest["output"]))


if __name__ == "__main__":
    main()
