"""`ray job submit` entry point for the prompts stage (runs on the driver; no cluster resources).

    ray job submit --working-dir . -- python jobs/prompts.py --config jobs/configs/sd15_cluster.yaml
"""

import sys

from dft.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["prompts", *sys.argv[1:]]))
