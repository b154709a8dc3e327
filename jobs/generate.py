"""`ray job submit --working-dir . -- python jobs/generate.py --config jobs/configs/X.yaml [--set generate.num_actors=8]`

Generates the synthetic set of a run (RUN/synthetic). Same options as `dft generate`; re-submitting
resumes: committed shards are kept, the rest are redone."""

import sys

from dft.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
