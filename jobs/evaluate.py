"""`ray job submit --working-dir . -- python jobs/evaluate.py --config jobs/configs/X.yaml [--curate]`

Evaluates the models of `evaluate.models` on the neutral prompts (RUN/eval), then writes RUN/report/
(as `dft evaluate`). With --curate it runs the curation stage instead (RUN/curated, as `dft curate`)."""

import sys

from dft.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    command = "curate" if "--curate" in args else "evaluate"
    sys.exit(main([command, *[a for a in args if a != "--curate"]]))
