"""`ray job submit --working-dir . -- python jobs/finetune.py --config jobs/configs/X.yaml [--set train.num_workers=8]`

Fine-tunes with Ray Train + DeepSpeed and exports RUN/models/finetuned. Re-submitting the same job
resumes from the latest checkpoint in RUN/checkpoints/; on a finished run it does nothing."""

import argparse
import json
import logging
import sys

from dft.config.load import load_config
from dft.train.stage import run_train

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Diversity fine-tuning on Ray Train + DeepSpeed.")
    p.add_argument("--config", "-c", action="append", default=[], help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="section.key=value")
    p.add_argument("--force", action="store_true", help="Start over: remove this run's checkpoints and retrain.")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    print(json.dumps(run_train(cfg, force=args.force), indent=2, default=str))
    sys.exit(0)
