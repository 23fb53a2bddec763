"""WLASL100 ablation: each ingredient of the recipe switched on in turn.

    python scripts/ablation.py run [--rows A,B] [--seeds 0] [--parallel 2]
    python scripts/ablation.py table [--seeds 0,1,2]
    python scripts/ablation.py ctc-table [--seeds 0,1,2]

The ``ctc-*`` rows are the remedies that make CTC decode on its own (peak
loss, presence loss, label prior, auxiliary classifier, training sentences), each on top of the recipe
with 100 seeded val sentences scored every epoch; ``ctc-table`` prints exact
and greedy top-1, blank ratio and the sentences' word error rate (greedy,
beam) at the best val epoch.

Every row is ``asl-ray train -c configs/wlasl100_attention.yaml`` with the
row's ``--set`` overrides (so each row is a normal, resumable training run
under ``--run-dir``, named ``<row>-s<seed>``). ``table`` reads the runs'
histories and prints the README's markdown table: val top-1 / top-5 at the
best val epoch (how the recipe picks its checkpoint) and at the last epoch
(no selection at all). Train split for training, val for everything else.
The features must already be extracted (``asl-ray extract -c
configs/wlasl100_attention.yaml``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "wlasl100_attention.yaml"

# Shorthands for the overrides the rows share.
_LSTM = ["model.encoder=lstm", "model.num_layers=2"]
# The inputs, read by one linear map (the recipe embeds each body part by
# itself since row 19; rows before it, and rows on top of row 13, did not).
_JOINT = ["model.part_embed=false"]
_PHONO = ["features.inputs=[phono]", *_JOINT]
_RICH = ["features.inputs=[phono,masks,hands,pose,velocity]", *_JOINT]
_BONES = ["features.inputs=[phono,masks,hands,pose,velocity,bones]", *_JOINT]
_NO_AUG = ["train.augment.enabled=false"]
_NO_PENALTY = ["train.blank_penalty=0"]

# Inputs (and how they are embedded), label smoothing and mirroring set explicitly on every row, so each
# row means the same whatever the recipe config holds.
_SMOOTH, _NO_SMOOTH = ["train.label_smoothing=0.1"], ["train.label_smoothing=0"]
_MIRROR, _NO_MIRROR = ["train.augment.mirror=0.5"], ["train.augment.mirror=0"]
_PLAIN = _NO_SMOOTH + _NO_MIRROR
# The landmark augmentation's ranges: AugmentConfig's defaults, the recipe's
# until row 28, and the heavier ones it has had since. A row that does not set
# its own gets the defaults (``_with_ranges``), so the config's ranges change no row.
_RANGES = ["train.augment.speed=[0.8,1.2]", "train.augment.rotate_deg=10", "train.augment.scale=0.1",
           "train.augment.shear=0.1"]
_HEAVY = ["train.augment.speed=[0.7,1.4]", "train.augment.rotate_deg=15", "train.augment.scale=0.2",
          "train.augment.shear=0.15"]


def _with_ranges(rows: list[tuple[str, str, list[str]]]) -> list[tuple[str, str, list[str]]]:
    return [(name, what, overrides if any(o.startswith("train.augment.speed=") for o in overrides)
             else overrides + _RANGES) for name, what, overrides in rows]


# (name, what the row changes, overrides on top of configs/wlasl100_attention.yaml). Rows 1-4
# build up the BiLSTM, rows 5-9 the attention encoder up to the first recipe;
# the rest each change one thing of row 7, 9, 13, 19 or 28. Row 28 is the recipe now.
RECIPE = "recipe-parts-augment-heavy"  # the row that is the config as it is
FIRST_RECIPE = "attn-smooth-mirror"  # the recipe before finger bones
# The rows whose seeds' models the table also combines at inference (test-time
# speeds, an ensemble): row 9, row 19 (the recipe before row 28), and the recipe.
COMBINED = (FIRST_RECIPE, "recipe-parts", RECIPE)
ROWS: list[tuple[str, str, list[str]]] = _with_ranges([
    ("lstm-phono", "BiLSTM 128x2 on the 36-D phonological features, no augmentation, no blank penalty",
     _LSTM + _PHONO + _NO_AUG + _NO_PENALTY + _PLAIN),
    ("lstm-penalty", "+ blank penalty 0.1", _LSTM + _PHONO + _NO_AUG + _PLAIN),
    ("lstm-rich", "+ rich inputs (masks, wrist-relative hands, pose, velocities)", _LSTM + _RICH + _NO_AUG + _PLAIN),
    ("lstm-aug", "+ augmentation (speed, frame drop, rotation, scale, shear, noise)", _LSTM + _RICH + _PLAIN),
    ("attn-base", "row 2 with the attention encoder (3 layers) instead of the BiLSTM", _PHONO + _NO_AUG + _PLAIN),
    ("attn-no-aug", "+ rich inputs", _RICH + _NO_AUG + _PLAIN),
    ("attention", "+ augmentation", _RICH + _PLAIN),
    ("attn-smooth", "+ label smoothing 0.1", _RICH + _SMOOTH + _NO_MIRROR),
    ("attn-smooth-mirror", "+ mirror augmentation (p=0.5), the recipe until row 13", _RICH + _SMOOTH + _MIRROR),
    ("attn-phono", "row 7 without the rich inputs (phonological features only)", _PHONO + _PLAIN),
    ("attn-mirror", "row 7 + mirror augmentation (p=0.5)", _RICH + _NO_SMOOTH + _MIRROR),
    ("attn-bones", "row 7 + finger bone directions (input block `bones`)", _BONES + _PLAIN),
    ("recipe-bones", "row 9 + finger bone directions, the recipe until row 19", _BONES + _SMOOTH + _MIRROR),
    ("attn-curriculum", "row 7 + vocabulary curriculum 10 -> 50 -> 100 (5 epochs each)",
     _RICH + ["train.curriculum=[10,50]", "train.curriculum_epochs=5"] + _PLAIN),
    # #15: ingredients of the strongest landmark models, each on top of the recipe (row 13).
    ("recipe-conv", "row 13 + a temporal convolution block (kernel 9) before each attention layer",
     _BONES + _SMOOTH + _MIRROR + ["model.conv_kernel=9"]),
    ("recipe-drop", "row 13 + landmark dropout (each hand hidden over 20-60% of the frames with p 0.3, "
     "everything over up to 20% with p 0.3)",
     _BONES + _SMOOTH + _MIRROR + ["train.augment.hand_drop=0.3", "train.augment.time_mask=0.3"]),
    ("recipe-ema", "row 13 + a moving average of the weights (decay 0.998 a step, ~12 epochs), scored and kept",
     _BONES + _SMOOTH + _MIRROR + ["train.ema_decay=0.998"]),
    ("recipe-pretrain", "row 13 from an encoder pre-trained without labels (masked-landmark reconstruction, "
     "40 epochs, train videos + 84 asl-signs files)", _BONES + _SMOOTH + _MIRROR),
    ("recipe-parts", "row 13 with each body part's inputs (left hand, right hand, body) embedded by its own layer, "
     "then fused (`model.part_embed=true`)", [_BONES[0], "model.part_embed=true"] + _SMOOTH + _MIRROR),
    ("recipe-distill", "row 13 distilled from the three seeds of row 13 (their posteriors over glosses averaged; "
     "run it with --run-dir runs/abl15 after them)", _BONES + _SMOOTH + _MIRROR + ["train.distill_level=glosses",
     "train.distill_from=[" + ",".join(str(ROOT / "runs" / "abl15" / f"recipe-bones-s{s}") for s in (0, 1, 2)) + "]"]),
    ("recipe-parts-distill", "row 19 distilled from the three seeds of row 19 (their posteriors over glosses "
     "averaged; run it with --run-dir runs/abl15 after them)", [_BONES[0], "model.part_embed=true"] + _SMOOTH
     + _MIRROR + ["train.distill_level=glosses", "train.distill_from=[" + ",".join(
         str(ROOT / "runs" / "abl15" / f"recipe-parts-s{s}") for s in (0, 1, 2)) + "]"]),
    ("recipe-parts-lips", "row 19 + the lips input block (Face Mesh's 40 lip points relative to their centre, "
     "its own part); features extracted with extract.lips=true into runs/wlasl100-lips/features",
     ["features.inputs=[phono,masks,hands,pose,velocity,bones,lips]", "model.part_embed=true"] + _SMOOTH + _MIRROR
     + ["extract.output_dir=" + str(ROOT / "runs" / "wlasl100-lips" / "features")]),
    ("recipe-parts-dominant", "row 19 with every left-handed sequence mirrored, in training and at inference "
     "(`features.dominant_hand=true`), instead of random mirroring", [_BONES[0], "model.part_embed=true",
     "features.dominant_hand=true"] + _SMOOTH + _NO_MIRROR),
    ("recipe-parts-latedrop", "row 19 with dropout 0.8 before the CTC head from epoch 31 "
     "(`train.late_dropout=0.8`, once train top-1 is past ~85%)", [_BONES[0], "model.part_embed=true",
     "train.late_dropout=0.8", "train.late_dropout_from_epoch=31"] + _SMOOTH + _MIRROR),
    ("recipe-parts-encoders", "row 19 with one attention layer of its own over each body part's embedded "
     "sequence before the fusion (`model.part_layers=1`, Siformer's per-part encoders)",
     [_BONES[0], "model.part_embed=true", "model.part_layers=1"] + _SMOOTH + _MIRROR),
    ("recipe-parts-droppath", "row 19 with stochastic depth: each sample skips encoder layer i of 3 with chance "
     "0.2 i / 3 in training (`model.drop_path=0.2`, as the Kaggle ISLR winner)",
     [_BONES[0], "model.part_embed=true", "model.drop_path=0.2"] + _SMOOTH + _MIRROR),
    ("recipe-parts-droppath-long", "row 26 trained twice as long: 200 epochs, the cosine schedule stretched to "
     "them (`train.epochs=200`; the Kaggle ISLR winner trained 300-400 with stochastic depth)",
     [_BONES[0], "model.part_embed=true", "model.drop_path=0.2", "train.epochs=200"] + _SMOOTH + _MIRROR),
    ("recipe-parts-augment-heavy", "row 19 with heavier landmark augmentation, towards the Kaggle ISLR winner's "
     "ranges (speed 0.7-1.4 instead of 0.8-1.2, rotation 15 degrees instead of 10, scale 0.2 instead of 0.1, "
     "shear 0.15 instead of 0.1): train top-1 ends near 100%",
     [_BONES[0], "model.part_embed=true", *_HEAVY] + _SMOOTH + _MIRROR),
    ("recipe-parts-awp", "row 28 with adversarial weight perturbation from epoch 11: each step's gradient taken "
     "with every weight matrix pushed up its gradient by 0.5% of its norm (`train.awp=0.005`, Wu et al.'s size; "
     "the Kaggle ISLR winner's AWP; on row 19's seed 0 that push lifts the train loss from 1.95 to 3.47)",
     [_BONES[0], "model.part_embed=true", *_HEAVY, "train.awp=0.005", "train.awp_from_epoch=11"] + _SMOOTH
     + _MIRROR),
    ("recipe-parts-hands-moved", "row 28 with each hand moved on its own, one draw per hand and clip: turned "
     "up to 15 degrees about each axis and resized up to 15% about its wrist, shifted up to 0.1 shoulder widths "
     "(`train.augment.hand_rotate_deg=15`, `hand_scale=0.15`, `hand_shift=0.1`): other signers' hand sizes, "
     "hand angles and sign placement, which the body frame leaves as they are",
     [_BONES[0], "model.part_embed=true", *_HEAVY, "train.augment.hand_rotate_deg=15",
      "train.augment.hand_scale=0.15", "train.augment.hand_shift=0.1"] + _SMOOTH + _MIRROR),
    ("recipe-parts-cutmix", "row 28 with temporal CutMix: half the batches mixed, each clip given a span of "
     "10-50% of its frames from another clip of the batch and trained towards both glosses by their shares "
     "(`train.cutmix=0.5`; the recipe fits its train clips to ~100%, and mixed labels are the regulariser "
     "that augmentation of one clip is not)",
     [_BONES[0], "model.part_embed=true", *_HEAVY, "train.cutmix=0.5"] + _SMOOTH + _MIRROR),
    ("recipe-parts-wide", "row 28 with a wider encoder, 192 instead of 128 (`model.hidden_size=192`, the Kaggle "
     "ISLR winner's width; 1.12M parameters against 0.53M): every regulariser so far left the train-val gap as "
     "it was, so this asks whether capacity, not fit, is what val is short of",
     [_BONES[0], "model.part_embed=true", *_HEAVY, "model.hidden_size=192"] + _SMOOTH + _MIRROR),
    ("recipe-parts-palm", "row 28 + each hand's finger bone directions in its own palm frame (input block "
     "`palm`: handshape free of hand orientation, as SignBERT+'s joint rotations and Siformer's hand "
     "rectification separate them; the `bones` block's body-frame directions change whenever the hand turns)",
     ["features.inputs=[phono,masks,hands,pose,velocity,bones,palm]", "model.part_embed=true", *_HEAVY]
     + _SMOOTH + _MIRROR),
    ("recipe-parts-fill", "row 28 with each hand's gaps of up to 6 frames (0.2 s) in MediaPipe's tracking filled by "
     "linear interpolation, in training and at inference (`features.fill_gaps=6`): of WLASL100's 2,097 interior "
     "gaps in hand tracking, 1,510 are one frame (a moving hand lost to motion blur), 2,002 at most 6",
     [_BONES[0], "model.part_embed=true", *_HEAVY, "features.fill_gaps=6"] + _SMOOTH + _MIRROR),
])
# Rows that first pre-train their encoder (`asl-ray pretrain`, same seed and
# model) with these overrides, then train from it (train.init_encoder). The
# asl-signs features must be extracted: asl-ray extract -c configs/asl_signs.yaml
ASL_SIGNS = ROOT / "runs" / "asl_signs" / "features"
PRETRAIN: dict[str, list[str]] = {
    "recipe-pretrain": ["pretrain.epochs=40", f"pretrain.extra_datasets=[{ASL_SIGNS}]"],
}

# CTC that decodes (asl_ray/continuous, losses.py): row 13 with 100 val sentences, plus one remedy at a time.
_CTC = _BONES + _SMOOTH + _MIRROR + ["train.sentences.val=100"]
_PEAK, _AUX, _SENT = ["train.peak_weight=1.0"], ["train.aux_weight=0.5"], ["train.sentences.share=0.5"]
_KNOWN = ["train.peak_known_only=true"]
_PRESENCE = ["train.presence_weight=1.0"]
_PRIOR = ["train.label_prior=0.3"]
_LATE = ["train.frame_terms_from_epoch=61"]
_SUB16 = ["model.subsample=16"]
CTC_ROWS: list[tuple[str, str, list[str]]] = _with_ranges([
    ("ctc-peak", "+ peak loss (weight 1, margin 1)", _CTC + _PEAK),
    ("ctc-peak-known", "+ peak loss on clips already ranked right (and sentences)", _CTC + _PEAK + _KNOWN),
    ("ctc-aux", "+ auxiliary gloss classifier (weight 0.5)", _CTC + _AUX),
    ("ctc-sentences", "+ training sentences (half of each batch's clips)", _CTC + _SENT),
    ("ctc-all", "+ all three", _CTC + _PEAK + _AUX + _SENT),
    ("ctc-all-known", "+ all three, peak loss on clips already ranked right", _CTC + _PEAK + _KNOWN + _AUX + _SENT),
    ("ctc-known-nosmooth", "+ peak loss on clips already ranked right, no label smoothing",
     _BONES + _NO_SMOOTH + _MIRROR + ["train.sentences.val=100"] + _PEAK + _KNOWN),
    ("ctc-presence", "+ presence loss (weight 1, margin 1)", _CTC + _PRESENCE),
    ("ctc-presence-sentences", "+ presence loss and training sentences", _CTC + _PRESENCE + _SENT),
    ("ctc-presence-lstm", "the BiLSTM (2 layers), + presence loss", _CTC + _LSTM + _PRESENCE),
    ("ctc-prior", "+ label prior (α 0.3) in the CTC term", _CTC + _PRIOR),
    ("ctc-prior-sentences", "+ label prior (α 0.3) and training sentences", _CTC + _PRIOR + _SENT),
    ("ctc-prior-lstm", "the BiLSTM (2 layers), + label prior (α 0.3)", _CTC + _LSTM + _PRIOR),
    ("ctc-presence-late", "+ presence loss from epoch 61 of 100", _CTC + _PRESENCE + _LATE),
    ("ctc-presence-late-sentences", "+ presence loss from epoch 61 and training sentences",
     _CTC + _PRESENCE + _LATE + _SENT),
    ("ctc-presence-late-lstm", "the BiLSTM (2 layers), + presence loss from epoch 61",
     _CTC + _LSTM + _PRESENCE + _LATE),
    ("ctc-sub8", "+ CTC step of 8 frames (model.subsample=8)", _CTC + ["model.subsample=8"]),
    ("ctc-sub16", "+ CTC step of 16 frames (model.subsample=16)", _CTC + _SUB16),
    ("ctc-sub16-sentences", "+ CTC step of 16 frames and training sentences", _CTC + _SUB16 + _SENT),
    ("ctc-sub16-lstm", "the BiLSTM (2 layers), + CTC step of 16 frames", _CTC + _LSTM + _SUB16),
    ("ctc-sub16-sentences-quarter", "+ CTC step of 16 frames and training sentences from a quarter of each "
     "batch's clips instead of half (fewer insertions on isolated clips?)",
     _CTC + _SUB16 + ["train.sentences.share=0.25"]),
    ("ctc-sub16-sentences-lstm", "the BiLSTM (2 layers), + CTC step of 16 frames and training sentences",
     _CTC + _LSTM + _SUB16 + _SENT),
    ("ctc-sub16-sentences-distill", "+ CTC step of 16 frames and training sentences, distilled from the three "
     "seeds of that row (their per-step posteriors averaged; run it with --run-dir runs/ctc after them)",
     _CTC + _SUB16 + _SENT + ["train.distill_from=[" + ",".join(
         str(ROOT / "runs" / "ctc" / f"ctc-sub16-sentences-s{s}") for s in (0, 1, 2)) + "]"]),
    ("ctc-sub16-sentences-parts", "+ CTC step of 16 frames and training sentences, each body part's inputs "
     "embedded by its own layer (`model.part_embed=true`, as recipe row 19)",
     [_BONES[0], "model.part_embed=true"] + _SMOOTH + _MIRROR + ["train.sentences.val=100"] + _SUB16 + _SENT),
    ("ctc-sub16-sentences-ema", "+ CTC step of 16 frames, training sentences and a moving average of the weights "
     "(decay 0.998 a step)", _CTC + _SUB16 + _SENT + ["train.ema_decay=0.998"]),
    ("ctc-sub16-sentences-heavy", "+ CTC step of 16 frames, training sentences and the heavier landmark "
     "augmentation of recipe row 28 (speed 0.7-1.4, rotation 15, scale 0.2, shear 0.15)",
     _CTC + _SUB16 + _SENT + _HEAVY),
    ("ctc-sub16-sentences-most", "+ CTC step of 16 frames and training sentences from three quarters of each "
     "batch's clips instead of half (a quarter of them made WER 12 points worse than half; repeats merged)",
     _CTC + _SUB16 + ["train.sentences.share=0.75", "train.sentences.merge_repeats=true"]),
    ("ctc-sub16-sentences-palm", "+ CTC step of 16 frames and training sentences, with each hand's finger bone "
     "directions in its own palm frame as well (input block `palm`, recipe row 32; repeats merged)",
     ["features.inputs=[phono,masks,hands,pose,velocity,bones,palm]", *_JOINT] + _SMOOTH + _MIRROR
     + ["train.sentences.val=100"] + _SUB16 + _SENT + ["train.sentences.merge_repeats=true"]),
])


def _run(row: str, overrides: list[str], seed: int, run_dir: Path, features: str, parallel: int = 1) -> int:
    cmd = [sys.executable, "-m", "asl_ray.cli", "train", "-c", str(CONFIG),
           "--set", f"train.run_dir={run_dir}", "--set", f"train.name={row}-s{seed}",
           "--set", f"train.seed={seed}", "--set", f"extract.output_dir={features}"]
    for o in overrides:
        cmd += ["--set", o]
    if (run_dir / f"{row}-s{seed}" / "best_checkpoint.txt").is_file():  # written when a run finishes
        print(f"skip  {row}-s{seed}: finished already (delete its folder to run it again)", flush=True)
        return 0
    log = run_dir / f"{row}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"start {row}-s{seed}: log {log}", flush=True)
    with log.open("a") as fh:
        if row in PRETRAIN:
            encoder = run_dir / f"{row}-s{seed}-encoder.pt"
            if not encoder.is_file():  # written at the end of pre-training
                # Pre-training is one plain torch process (Ray Train sets the
                # thread count of its own workers): several at once, each with
                # torch's default of every core, ran 3x slower than one thread each.
                env = dict(os.environ)
                env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
                rc = subprocess.call([*cmd[:3], "pretrain", *cmd[4:], "--set", f"pretrain.output={encoder}",
                                      *[x for o in PRETRAIN[row] for x in ("--set", o)]],
                                     cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
                if rc:
                    print(f"done  {row}-s{seed}: pre-training exit {rc}", flush=True)
                    return rc
            cmd += ["--set", f"train.init_encoder={encoder}"]
        rc = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    print(f"done  {row}-s{seed}: exit {rc}", flush=True)
    return rc


def _history(run_dir: Path, name: str) -> list[dict[str, float]] | None:
    """History of the run's newest checkpoint (each checkpoint holds all epochs so far)."""
    checkpoints = sorted((run_dir / name).glob("checkpoint_*/history.json"))
    return json.loads(checkpoints[-1].read_text()) if checkpoints else None


def _mean(xs: list[float]) -> str:
    return f"{100 * sum(xs) / len(xs):.1f}"


def table(run_dir: Path, seeds: list[int], epochs: int | None, features: str) -> str:
    lines = ["| # | ingredient | seeds | val top-1 / top-5, best epoch | val top-1 / top-5, last epoch |",
             "| --- | --- | --- | --- | --- |"]
    for i, (row, what, _) in enumerate(ROWS, 1):
        best1, best5, last1, last5, used = [], [], [], [], []
        for seed in seeds:
            hist = _history(run_dir, f"{row}-s{seed}")
            if not hist or (epochs and len(hist) < epochs):
                continue  # not run, or still running
            # Curriculum stages score a smaller problem: like the trainer, pick among full-vocabulary epochs.
            full = max(h.get("vocab_limit", 0) for h in hist)
            best = max((h for h in hist if h.get("vocab_limit", 0) == full), key=lambda h: h["val_top1"])
            best1.append(best["val_top1"])
            best5.append(best["val_top5"])
            last1.append(hist[-1]["val_top1"])
            last5.append(hist[-1]["val_top5"])
            used.append(str(seed))
        if row == RECIPE:
            what += " = **the recipe**, `configs/wlasl100_attention.yaml`"
        if used:
            lines.append(f"| {i} | {what} | {','.join(used)} | {_mean(best1)} / {_mean(best5)} | "
                         f"{_mean(last1)} / {_mean(last5)} |")
    lines += _inference_rows(run_dir, seeds, features, len(ROWS))
    return "\n".join(lines)


def ctc_table(run_dir: Path, seeds: list[int]) -> str:
    """The CTC remedies at each run's best val epoch (exact top-1 picks it, as
    training does; for a remedy that starts late, among the epochs it was on).
    A run still going, or stopped before its last epoch, is shown with the
    epochs it has ("36, unfinished")."""
    keys = ("val_top1", "val_greedy_acc", "val_blank_ratio", "val_wer_greedy", "val_wer_beam")
    lines = ["| remedy (on the recipe) | seeds | epochs | exact top-1 | greedy top-1 | blank ratio | WER greedy "
             "| WER beam |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, what, overrides in CTC_ROWS:
        # A remedy that starts late: its best epoch among the epochs it was on
        # (before that the run is the recipe itself).
        start = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("train.frame_terms_from_epoch=")), 1)
        got: dict[str, list[float]] = {k: [] for k in keys}
        used, epochs = [], []
        for seed in seeds:
            hist = _history(run_dir, f"{row}-s{seed}")
            if not hist:
                continue  # not run
            done = (run_dir / f"{row}-s{seed}" / "best_checkpoint.txt").is_file()
            epochs.append(f"{len(hist)}" + ("" if done else ", unfinished"))
            best = max((h for h in hist if h["epoch"] >= start), key=lambda h: h["val_top1"], default=hist[-1])
            for k in keys:
                got[k].append(best.get(k, float("nan")))
            used.append(str(seed))
        if used:
            blank = sum(got["val_blank_ratio"]) / len(used)
            lines.append(f"| {what} | {','.join(used)} | {'; '.join(epochs)} | {_mean(got['val_top1'])} "
                         f"| {_mean(got['val_greedy_acc'])} | {blank:.2f} | {_mean(got['val_wer_greedy'])} "
                         f"| {_mean(got['val_wer_beam'])} |")
    return "\n".join(lines)


def _inference_rows(run_dir: Path, seeds: list[int], features: str, n: int) -> list[str]:
    """The checkpoints of the rows in ``COMBINED`` (rows 9, 19 and 28) combined
    at inference: test-time speeds, a seed ensemble; the recipe's also with
    test-time mirroring.
    Numbered after the training rows whichever of them the run folder holds
    (row 9's runs are in runs/ablation, the others in runs/abl15)."""
    from asl_ray.checkpoint import latest_checkpoint, load_checkpoint
    from asl_ray.evaluation import evaluate_ensemble

    lines, mirrored = [], []
    for i, row in enumerate(COMBINED):
        number = 1 + [r[0] for r in ROWS].index(row)
        runs = [run_dir / f"{row}-s{s}" for s in seeds if (run_dir / f"{row}-s{s}" / "best_checkpoint.txt").is_file()]
        if not runs:
            continue
        used = ",".join(r.name.rsplit("-s", 1)[1] for r in runs)
        picks = {"best": [load_checkpoint(r) for r in runs],
                 "last": [load_checkpoint(latest_checkpoint(r) or r) for r in runs]}

        def cell(speeds: tuple[float, ...], ensemble: bool, mirror: bool = False, picks: dict = picks) -> str:
            out = []
            for cks in picks.values():
                if ensemble:
                    m = [evaluate_ensemble(cks, "val", features, speeds, mirror).metrics]
                else:
                    m = [evaluate_ensemble([ck], "val", features, speeds, mirror).metrics for ck in cks]
                out.append(f"{_mean([x['top1'] for x in m])} / {_mean([x['top5'] for x in m])}")
            return " | ".join(out)

        lines += [f"| {n + 2 * i + 1} | row {number}, test-time speeds 0.9 / 1 / 1.1 averaged | {used} | "
                  f"{cell((0.9, 1.0, 1.1), False)} |",
                  f"| {n + 2 * i + 2} | row {number}, ensemble of the {len(runs)} seeds' models (posteriors averaged) "
                  f"| {used} | {cell((1.0,), True)} |"]
        if row == RECIPE:  # numbered after all of the above, so adding it renumbered none of them
            mirrored.append(f"| {n + 2 * len(COMBINED) + 1} | row {number}, test-time mirroring (each clip's "
                            f"posterior averaged with its mirror image's, `--tta-mirror`) | {used} | "
                            f"{cell((1.0,), False, True)} |")
    return lines + mirrored


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["run", "table", "ctc-table", "list"])
    p.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--parallel", type=int, default=2, help="training runs at once")
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "ablation")
    p.add_argument("--features", default=str(ROOT / "runs" / "wlasl100" / "features"))
    p.add_argument("--epochs", type=int, default=None, help="table: only runs with this many epochs")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = ROWS + CTC_ROWS
    names = {r[0] for r in rows}
    wanted = args.rows.split(",") if args.rows else [r[0] for r in ROWS]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(sorted(names))}")
    if args.action == "list":
        for name, what, overrides in rows:
            print(f"{name:16s} {what}\n{'':16s} --set {' --set '.join(overrides) or '(the config as is)'}")
    elif args.action == "table":
        print(table(args.run_dir.resolve(), seeds, args.epochs, args.features))
    elif args.action == "ctc-table":
        print(ctc_table(args.run_dir.resolve(), seeds))
    else:
        # Seed-major, so an interrupted batch still covers every row.
        jobs = [(r, o, s) for s in seeds for r, _, o in rows if r in wanted]
        with ThreadPoolExecutor(args.parallel) as pool:
            codes = list(pool.map(lambda j: _run(j[0], j[1], j[2], args.run_dir.resolve(), args.features,
                                                 args.parallel), jobs))
        sys.exit(max(codes, default=0))


if __name__ == "__main__":
    main()
