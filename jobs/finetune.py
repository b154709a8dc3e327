"""`ray job submit --working-dir . -- python jobs/finetune.py --config jobs/configs/X.yaml [--set train.num_workers=8]`

Fine-tunes with Ray Train + DeepSpeed and exports RUN/models/finetuned. Same options as `dft train`.
Re-submitting the same job resumes from the latest checkpoint in RUN/checkpoints/; on a finished run
it does nothing (`--force` starts over)."""

import sys

from dft.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
