"""`ray job submit -- python jobs/evaluate.py --config jobs/configs/X.yaml [--curate] [--no-report]`

Evaluates base and fine-tuned models on the neutral prompts (RUN/eval), then writes RUN/report/.
With --curate it runs the curation stage instead (RUN/curated)."""

import argparse
import logging
import sys

from dft.config.load import load_config
from dft.evaluate.stage import run_curate, run_evaluate, run_report

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Fairness evaluation (and report, or curation) of a run on Ray.")
    p.add_argument("--config", "-c", action="append", default=[], help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.key=value")
    p.add_argument("--force", action="store_true", help="Redo the stage even if it finished.")
    p.add_argument("--curate", action="store_true", help="Run curation of RUN/synthetic instead of evaluation.")
    p.add_argument("--no-report", action="store_true", help="Skip writing RUN/report after evaluating.")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if args.curate:
        print(run_curate(cfg, force=args.force))
    else:
        print(run_evaluate(cfg, force=args.force))
        if not args.no_report:
            print(run_report(cfg, force=True))
    sys.exit(0)
