"""Entry point for `ray job submit`: extraction on a running cluster.

    ray job submit --working-dir . -- python jobs/extract.py -c configs/wlasl100.yaml \
        --set extract.output_dir=s3://bucket/wlasl100/features

Inside a job, RAY_ADDRESS points at the cluster, so the same code that runs
locally joins it instead of starting a local Ray.
"""

import sys

from asl_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
