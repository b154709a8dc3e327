"""`ray job submit -- python jobs/generate.py --config jobs/configs/X.yaml [--set generate.num_actors=8]`"""

import argparse
import logging
import sys

from dft.config.load import load_config
from dft.generate.stage import run_generate

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Generate the synthetic set of a run (RUN/synthetic) on Ray.")
    p.add_argument("--config", "-c", action="append", default=[], help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.key=value")
    p.add_argument("--force", action="store_true", help="Redo the stage from scratch.")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = run_generate(load_config(args.config, args.overrides), force=args.force)
    print(counts)
    sys.exit(0)
