"""Entry point for `ray job submit`: training on a running cluster.

    ray job submit --working-dir . -- python jobs/train.py -c configs/wlasl100.yaml \
        --set train.num_workers=4 --set train.run_dir=s3://bucket/runs

Inside a job, RAY_ADDRESS points at the cluster, so the same code that runs
locally joins it instead of starting a local Ray.
"""

import sys
from pathlib import Path

# Run the code that came with the job's working directory, not whatever
# asl_ray the cluster's Python happens to have installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
