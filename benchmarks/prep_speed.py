"""CPU cost of building model inputs, one clip at a time against one pass per batch.

    python benchmarks/prep_speed.py [--sequences 2000] [--repeats 3]

Ray Data's prep tasks build every training batch's inputs (augmented afresh
each epoch), the val inputs and the standardiser's sums, on the CPUs beside
the training workers; at 100k sequences the driver's two passes over 20k
sequences each come before the first step. Measured on asl-signs-shaped
synthetic sequences (24-48 frames) with the recipe's input blocks
(phono, masks, hands, pose, velocity, bones), CPU seconds of this process
(``time.process_time``, so a busy machine slows it less than wall time):

  (a) one clip at a time: ``dataset.prepare_inputs`` per clip, the path every
      clip took before (and the in-memory ``train.ingest=worker`` path still
      takes);
  (b) ``ingest.prepare_table`` on batches of 64 rows (Ray Data's batch size):
      landmarks per clip, then ``inputs.build_inputs_many`` over the batch.

Both without augmentation (val, standardiser) and with the recipe's
augmentation (train). Prints ms per sequence and (a)/(b).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from asl_ray.config import AugmentConfig, FeaturesConfig
    from asl_ray.extract import rows_to_table
    from asl_ray.ingest import SEED_COLUMN, prepare_table
    from asl_ray.inputs import Standardizer, input_size
    from asl_ray.samples import landmark_views, prepare_inputs
    from asl_ray.synthetic import synthetic_rows
    from asl_ray.vocab import Vocabulary

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    table = rows_to_table(synthetic_rows(num_glosses=250, per_gloss=max(1, args.sequences // 250), seed=0))
    rng = np.random.default_rng(0)
    table = table.append_column(SEED_COLUMN, [rng.random(table.num_rows)])
    kinds = ["phono", "masks", "hands", "pose", "velocity", "bones"]
    features = FeaturesConfig(inputs=kinds, max_frames=64)
    vocab = Vocabulary.from_train_glosses(table.column("gloss").to_pylist(), None)
    std = Standardizer(np.zeros(input_size(kinds), np.float32), np.ones(input_size(kinds), np.float32))
    views, fps = landmark_views(table), table.column("fps").to_pylist()
    n = table.num_rows
    frames = sum(v.shape[0] for v in views)
    print(f"{n} sequences, {frames / n:.1f} frames each on average, input width {input_size(kinds)}")
    print("augmentation | one clip at a time ms/seq | one pass per 64 rows ms/seq | ratio")
    for name, aug in (("none (val, standardiser)", None), ("recipe (train)", AugmentConfig(mirror=0.5))):
        one, batched = [], []
        for r in range(args.repeats):
            t = time.process_time()
            for i, (lm, f) in enumerate(zip(views, fps, strict=True)):
                prepare_inputs(lm, f, features, std, aug, np.random.default_rng([r, i]) if aug else None)
            one.append(time.process_time() - t)
            t = time.process_time()
            for start in range(0, n, 64):
                prepare_table(table.slice(start, 64), features, std, vocab, aug, seed=r)
            batched.append(time.process_time() - t)
        a, b = min(one) / n * 1e3, min(batched) / n * 1e3
        print(f"{name} | {a:.3f} | {b:.3f} | {a / b:.2f}x", flush=True)


if __name__ == "__main__":
    main()
