"""Entry point for `ray job submit`: a hyper-parameter search on a running cluster.

    ray job submit --working-dir . -- python jobs/tune.py -c configs/tune.yaml \
        --set tracking.uri=http://MLFLOW-HOST:5000 --set tune.num_samples=32

Trials run wherever the cluster has room: one per GPU on a GPU cluster.
"""

import sys
from pathlib import Path

# Run the code that came with the job's working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
