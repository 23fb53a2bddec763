"""Entry point for `ray job submit`: training on a running cluster.

    ray job submit --working-dir . -- python jobs/train.py -c configs/wlasl100.yaml \
        --set train.num_workers=4 --set train.run_dir=s3://bucket/runs

Inside a job, RAY_ADDRESS points at the cluster, so the same code that runs
locally joins it instead of starting a local Ray.
"""

import sys

from asl_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
