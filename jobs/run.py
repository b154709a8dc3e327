"""`ray job submit` entry point for a whole run: every stage in order.

    ray job submit --working-dir . -- python jobs/run.py --config jobs/configs/sd15_cluster.yaml
"""

import sys

from dft.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
