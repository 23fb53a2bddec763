"""One typed config tree for every command.

A run is described by one YAML file from ``configs/`` plus ``--set key=value``
overrides. Every section is a pydantic model that forbids unknown keys, so a
typo such as ``model.hiden_size`` is an error rather than a silently ignored
setting. :func:`load_config` turns any validation problem into a
:class:`ConfigError` whose message is one line naming the key, the bad value
and what is allowed; the CLI prints that line and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from asl_ray.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the dataset comes from and which part of it is used."""

    source: Literal["wlasl", "asl-signs", "folder", "pose"] = Field(
        "wlasl", description="dataset format; 'folder' = videos_dir/<gloss>/<name>.<ext>, or flat files; "
        "'pose' = .pose files (pose-format, MediaPipe Holistic layout) listed in pose_labels"
    )
    wlasl_json: Path | None = Field(None, description="WLASL_v0.3.json")
    videos_dir: Path | None = Field(None, description="folder of <video_id>.mp4 files")
    subset: Literal[100, 300, 1000, 2000] | None = Field(
        None, description="official nslt_<N>.json subset, read next to wlasl_json"
    )
    top_k_glosses: int | None = Field(
        None, gt=0, description="keep the K glosses with most videos (after subset)"
    )
    asl_signs_dir: Path | None = Field(
        None, description="Kaggle ISLR folder with train.csv and train_landmark_files/"
    )
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="asl-signs: share of participants held out as val"
    )
    split_seed: int = Field(0, description="asl-signs: seed of the participant split")
    folder_split: str = Field("train", description="folder: the split every video is put in")
    pose_labels: Path | None = Field(
        None, description="pose: CSV with columns path,gloss,split[,signer]; paths relative to its folder"
    )
    clips: Literal["auto", "raw", "trimmed"] = Field(
        "auto", description="what WLASL's frame_start/frame_end index: raw = the source video, trimmed = nothing "
        "(files already cut to the sign), auto = per video: cut if it has fewer frames than the bounds reach"
    )
    duplicates: Literal["drop", "keep"] = Field(
        "drop", description="drop: training leaves out val/test videos byte-identical to a train video and "
        "every video of a duplicate group with conflicting glosses; keep: use every row"
    )

    @model_validator(mode="after")
    def _paths_for_source(self) -> DataConfig:
        if self.source == "wlasl" and self.wlasl_json is None:
            raise ValueError("data.wlasl_json is required when data.source is 'wlasl'")
        if self.source == "folder" and self.videos_dir is None:
            raise ValueError("data.videos_dir is required when data.source is 'folder'")
        if self.source == "asl-signs" and self.asl_signs_dir is None:
            raise ValueError("data.asl_signs_dir is required when data.source is 'asl-signs'")
        if self.source == "pose" and self.pose_labels is None:
            raise ValueError("data.pose_labels is required when data.source is 'pose'")
        return self


class ExtractConfig(_Section):
    """Landmark extraction: where the feature dataset goes and how the work is spread."""

    output_dir: str = Field("runs/features", description="feature dataset folder (local path or URI)")
    num_actors: int = Field(2, gt=0, description="extractor actors, each holding one MediaPipe graph")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per actor")
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per actor, e.g. {extract: 1} to pin to CPU workers"
    )
    videos_per_file: int = Field(4, gt=0, description="videos per Parquet file (the unit of resume)")
    frame_stride: int = Field(1, gt=0, description="use every Nth frame")
    max_frame_size: int | None = Field(None, gt=0, description="downscale frames whose long side is larger")
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    lips: bool = Field(False, description="also run MediaPipe Face Mesh and keep its 40 lip points (input block "
                       "`lips`); ~1.08x the extraction time (benchmarks/lips_cost.py); a new output_dir, since "
                       "rows already there are kept as they are")
    splits: list[str] | None = Field(None, description="only these splits (None = all)")
    limit: int | None = Field(None, gt=0, description="at most this many videos (quick runs)")
    progress_seconds: float = Field(10.0, gt=0, description="seconds between progress lines")
    max_retries: int = Field(
        2, ge=0, description="times a video is tried again after it crashed the extractor process; "
        "then it is a failed row"
    )
    retry_failed: bool = Field(False, description="extract the failed rows of output_dir again (--retry-failed)")


InputKind = Literal["phono", "masks", "hands", "pose", "velocity", "bones", "palm", "lips"]


class FeaturesConfig(_Section):
    """What the model sees per frame, built from the stored normalised landmarks.

    phono: the 36 phonological features; masks: pose/left/right found (3);
    hands: both hands' 21 points relative to their wrist (126); pose: 9
    upper-body points (27); velocity: frame-to-frame motion of hands and pose;
    bones: unit direction of each hand's 20 finger bones (120); palm: the same
    directions in each hand's own palm frame, handshape free of orientation
    (120; on WLASL100's recipe +0.2 val top-1 over 3 seeds, within seed noise:
    README, row 33); lips: the 40
    lip points relative to their centre, and whether a face was found (121;
    needs a dataset extracted with extract.lips).
    """

    inputs: list[InputKind] = Field(["phono", "masks"], min_length=1, description="input blocks, in order")
    max_frames: int = Field(160, ge=8, description="longer videos are resampled uniformly to this")
    fill_gaps: int = Field(
        0, ge=0, le=30, description="fill each hand's runs of up to this many frames not found, between two "
        "frames where it was, by linear interpolation (inputs.fill_hand_gaps), in training and at inference; "
        "0 = off; 6 cost 3.1 val top-1 on WLASL100's recipe over 3 seeds (README, row 34)")
    dominant_hand: bool = Field(
        False, description="mirror every sequence whose left hand is found on more frames than its right, so the "
        "hand that signs is on the same side for every signer, in training and at inference (augment.py); on "
        "WLASL100, in place of random mirroring, -3.6 val top-1 over 3 seeds (README, row 23)")

    @property
    def lips(self) -> bool:
        """Whether the inputs read the lip points (samples then carry them)."""
        return "lips" in self.inputs


class ModelConfig(_Section):
    """BiLSTM-CTC (or attention encoder) over the per-frame inputs."""

    encoder: Literal["lstm", "attention"] = Field("lstm", description="sequence encoder")
    hidden_size: int = Field(128, gt=0, le=4096)
    num_layers: int = Field(2, gt=0, le=12)
    dropout: float = Field(0.3, ge=0, lt=1)
    bidirectional: bool = True
    attention_heads: int = Field(4, gt=0, description="attention encoder only; must divide hidden_size")
    lstm_mode: Literal["masked", "packed", "padded"] = Field(
        "masked", description="how the BiLSTM keeps padding out: masked (exact, fast), packed (exact), padded (inexact)"
    )
    subsample: int = Field(
        1, ge=1, le=64, description="frames per CTC output step: the head reads the encoder averaged over windows "
        "of this many frames, so a label cannot be spread thin over a long clip (model.py)")
    conv_kernel: int = Field(
        0, ge=0, le=63, description="attention encoder: a temporal convolution block over this many frames before "
        "each attention layer (depthwise, Conformer-style; 0 = none)")
    part_embed: bool = Field(
        False, description="embed each body part's inputs (left hand, right hand, body) by its own layer, then fuse "
        "them, instead of one linear map of all inputs (model.py); on WLASL100 +3.1 val top-1 over 3 seeds, so the "
        "recipe has it (README, row 19)")
    part_layers: int = Field(
        0, ge=0, le=12, description="with part_embed and the attention encoder: attention layers of its own over "
        "each body part's embedded sequence before the parts are fused (Siformer's per-part encoders; model.py); on "
        "WLASL100 one layer gave -5.5 val top-1 over 3 seeds, so the recipe has none (README, row 25)")
    drop_path: float = Field(
        0.0, ge=0, lt=1, description="attention encoder, training only: stochastic depth, each sample skips an "
        "encoder layer (and its convolution block) with this chance at the last layer, less below it (model.py; "
        "the Kaggle ISLR winner used 0.2); on WLASL100 0.2 gave -1.5 val top-1 over 3 seeds at 100 epochs, so the "
        "recipe has it off (README, row 26)")

    @model_validator(mode="after")
    def _encoder_options(self) -> ModelConfig:
        if self.conv_kernel and self.encoder != "attention":
            raise ValueError(f"model.conv_kernel={self.conv_kernel}: needs model.encoder=attention")
        if self.drop_path and self.encoder != "attention":
            raise ValueError(f"model.drop_path={self.drop_path}: needs model.encoder=attention")
        if self.part_layers and not (self.part_embed and self.encoder == "attention"):
            raise ValueError(f"model.part_layers={self.part_layers}: needs model.part_embed=true and "
                             "model.encoder=attention")
        if self.encoder == "attention" and self.hidden_size % self.attention_heads:
            raise ValueError(
                f"model.attention_heads={self.attention_heads}: must divide model.hidden_size={self.hidden_size}"
            )
        return self


class AugmentConfig(_Section):
    """Training-time augmentation of the landmarks (features are recomputed after)."""

    enabled: bool = True
    speed: tuple[float, float] | None = Field((0.8, 1.2), description="temporal resampling factor range")
    frame_drop: float = Field(0.1, ge=0, lt=1, description="probability of dropping each frame")
    rotate_deg: float = Field(10.0, ge=0, le=90, description="max rotation about each axis")
    scale: float = Field(0.1, ge=0, lt=1, description="max relative scale change")
    shear: float = Field(0.1, ge=0, lt=1, description="max shear coefficient")
    hand_rotate_deg: float = Field(
        0.0, ge=0, le=90, description="max rotation of each hand about its own wrist, about each axis, drawn for "
        "each hand apart (0 = off; with hand_scale 0.15 and hand_shift 0.1 on the WLASL100 recipe: -1.4 val top-1 "
        "over 3 seeds, README row 30)")
    hand_scale: float = Field(0.0, ge=0, lt=1, description="max relative size change of each hand about its wrist, "
                              "drawn for each hand apart (0 = off)")
    hand_shift: float = Field(0.0, ge=0, description="max shift of each hand along each axis, in shoulder widths, "
                              "drawn for each hand apart (0 = off)")
    noise: float = Field(0.01, ge=0, description="Gaussian noise std, in shoulder widths")
    mirror: float = Field(0.0, ge=0, le=1, description="probability of a left/right mirror")
    hand_drop: float = Field(
        0.0, ge=0, le=1, description="probability, per hand, of hiding it (as not found) over a random span of "
        "20-60% of the clip's frames")
    time_mask: float = Field(
        0.0, ge=0, le=1, description="probability of hiding every landmark over one random span of up to 20% "
        "of the clip's frames")


class SentencesConfig(_Section):
    """Continuous signing made from isolated clips (asl_ray/continuous/sentences.py)."""

    share: float = Field(0.0, ge=0, le=1, description="share of each training batch's clips joined into "
                         "sentences with multi-gloss CTC targets (0 = isolated clips only; ingest=ray_data)")
    min_clips: int = Field(2, ge=2, description="clips per sentence, at least")
    max_clips: int = Field(5, ge=2, description="clips per sentence, at most")
    gap: int = Field(4, ge=0, description="interpolated transition frames between two clips")
    keep_rest: int = Field(2, ge=0, description="rest frames (no hand) kept at each end of a clip")
    fps: float = Field(25.0, gt=0, description="frame rate every clip is resampled to before joining")
    val: int = Field(0, ge=0, description="seeded val sentences scored every epoch (WER greedy and beam); "
                     "built from the first val clips, none of them in training")
    val_seed: int = Field(0, description="seed of the val sentences")
    beam_size: int = Field(16, gt=0, description="beam width of the CTC prefix beam search")
    prior_corpus: Path | None = Field(
        None, description="gloss n-gram prior for beam search: a text file, one sentence of glosses per line "
        "(space-separated, the vocabulary's spelling); None = no prior")
    prior_weight: float = Field(0.5, ge=0, description="weight of the prior's log-probability per gloss")
    merge_repeats: bool = Field(False, description="read and score consecutive repetitions of a gloss as one "
                                "(PHOENIX-2014's scoring convention: a sign's repeated movement is one sign), "
                                "in greedy and beam readings, their WER references and predict's sequence")

    @model_validator(mode="after")
    def _clip_range(self) -> SentencesConfig:
        if self.min_clips > self.max_clips:
            raise ValueError(f"train.sentences.min_clips={self.min_clips} > max_clips={self.max_clips}")
        return self

    @property
    def used(self) -> bool:
        return self.share > 0 or self.val > 0


class TrainConfig(_Section):
    """Optimisation, vocabulary, checkpoints and scaling of a training run."""

    run_dir: str = Field("runs/train", description="checkpoints, MLflow store and plots go here")
    name: str | None = Field(None, description="run name (default: a timestamp)")
    vocab_size: int | None = Field(None, gt=1, description="keep the N most frequent train glosses")
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(16, gt=0, description="per worker")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    blank_penalty: float = Field(0.0, ge=0, description="weight of the mean blank probability in the loss")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="weight of the uniform target over the gloss posterior (isolated signs)"
    )
    peak_weight: float = Field(
        0.0, ge=0, description="weight of the peak loss: on its best frame each target gloss must beat blank and "
        "every other gloss by train.peak_margin (what greedy decoding needs; losses.py)")
    peak_margin: float = Field(1.0, gt=0, description="log-probability margin of the peak loss")
    peak_known_only: bool = Field(
        False, description="peak loss only on clips whose exact scores already rank the target first (and on "
        "sentences): turns ranked-first into read-by-greedy without pushing up glosses not yet learned")
    presence_weight: float = Field(
        0.0, ge=0, description="weight of the presence loss: on the frame where each target gloss is most likely, "
        "blank must lose to the glosses together by train.presence_margin (losses.py)")
    presence_margin: float = Field(1.0, gt=0, description="log-odds margin of the presence loss")
    label_prior: float = Field(
        0.0, ge=0, le=1, description="scale α of the label prior in the CTC term: alignments are scored by "
        "posterior / prior^α, the prior a running mean of the model's posteriors, so frames that say a gloss "
        "instead of blank pay (losses.py; 0 = plain CTC)")
    frame_terms_from_epoch: int = Field(
        1, ge=1, description="the peak and presence losses and the label prior act from this epoch on (1 = from "
        "the start): they slow the learning of which gloss, so CTC can learn that first")
    aux_weight: float = Field(
        0.0, ge=0, description="multi-task: weight of a gloss classifier's cross-entropy on the pooled encoder "
        "(isolated clips)")
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="keep an exponential moving average of the weights, this decay per optimiser "
        "step (warmed up as min(decay, (1+n)/(10+n)) over the first steps), and evaluate, select and save it "
        "instead of the weights being trained; the recipe's 40 steps an epoch make 0.998 an average over the "
        "last ~12 epochs; on WLASL100 it smooths the val curve but does not raise it (README, row 17; 0 = off)")
    late_dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout before the CTC head from train.late_dropout_from_epoch on, instead of "
        "model.dropout there: strong regularisation once the model fits the train set, as the Kaggle ISLR "
        "winners' late dropout (loop.py; 0 = off); 0.8 from epoch 31 of 100 costs 5.3 val top-1 on WLASL100 "
        "(README, row 24)")
    late_dropout_from_epoch: int = Field(1, ge=1, description="the epoch from which train.late_dropout acts")
    awp: float = Field(
        0.0, ge=0, lt=1, description="adversarial weight perturbation: before each optimiser step every weight "
        "matrix moves up its loss gradient by this fraction of its own norm, and the step takes the gradient "
        "found there, so training prefers minima that stay low when the weights move (Wu et al. 2020, the "
        "Kaggle ISLR winner's AWP; SAM's ascent step per tensor); doubles the cost of a step (loop.py; 0 = off); "
        "0.005 from epoch 11 cost 2.1 val top-1 on WLASL100 over 2 seeds (README, row 29)")
    awp_from_epoch: int = Field(1, ge=1, description="the epoch from which train.awp acts")
    cutmix: float = Field(
        0.0, ge=0, le=1, description="temporal CutMix: the chance that a batch of isolated clips is mixed, each "
        "clip given a span of another clip of the batch, and trained towards both glosses weighted by their "
        "shares of its frames (cutmix.py; 0 = off); 0.5 cost 2.1 val top-1 on WLASL100 over 3 seeds (README, row 31)")
    cutmix_share: list[float] = Field(
        [0.1, 0.5], min_length=2, max_length=2, description="the range the share of each clip's frames given to "
        "its partner is drawn from, once per mixed batch")
    distill_from: list[str] = Field(
        [], description="checkpoints (checkpoint or run folders, local or URI) whose averaged CTC posterior "
        "this run learns to match, e.g. the seeds of a recipe (distill.py); they must have this run's glosses, "
        "inputs and data, and with train.distill_level=steps its model.subsample; [] = off")
    distill_weight: float = Field(
        1.0, ge=0, description="weight of the distillation term (KL from the teachers' averaged posterior) "
        "when train.distill_from is set")
    distill_level: Literal["steps", "glosses"] = Field(
        "steps", description="what the student matches: the teachers' posterior at every CTC step (steps), or their "
        "posterior over single glosses from the exact CTC scores, on one-gloss clips (glosses; distill.py)")
    sentences: SentencesConfig = SentencesConfig()
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    amp: bool = Field(False, description="mixed precision on CUDA: bf16 autocast (fp16 with a gradient scaler on "
                      "GPUs without bf16). Off by default: this project's models are too small for it to pay (the "
                      "recipe's step on an H200: 24.6 ms in bf16, 16.5 ms in float32). No effect on CPU")
    early_stop_patience: int | None = Field(None, gt=0, description="epochs without val top-1 gain")
    curriculum: list[int] | None = Field(
        None, description="growing vocabulary stages, e.g. [2, 10]; the full vocabulary comes last"
    )
    curriculum_epochs: int = Field(3, gt=0, description="epochs per curriculum stage")
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    num_workers: int = Field(1, gt=0, description="Ray Train workers (data parallel)")
    cpus_per_worker: float = Field(1.0, gt=0)
    ingest: Literal["ray_data", "worker"] = Field(
        "ray_data", description="ray_data: Ray Data shards the dataset and builds inputs on CPU workers (scales); "
        "worker: each worker loads the dataset into memory (small datasets)"
    )
    prep_cpus: float = Field(1.0, gt=0, description="ray_data: CPUs per Ray Data task that builds inputs and augments")
    standardizer_rows: int | None = Field(
        4000, ge=1, description="ray_data: fit the input mean/std on at most this many train sequences, files "
        "taken in a seeded random order, before the first step (4k sequences are ~160k frames; on WLASL100, 400 "
        "random train sequences give a mean and std off those of all 641 by a median 1.4% and 1.2% of a std); "
        "null = all"
    )
    cache_val_rows: int = Field(
        50000, ge=0, description="ray_data: val inputs are built once, at the first evaluation, and kept in the "
        "object store when val has at most this many sequences; a larger val is rebuilt and streamed at every "
        "evaluation (no object-store copy, but each evaluation is slower: 81 s against 46 s for 20k sequences, "
        "benchmarks/scale.py; 0 = always stream)"
    )
    ingest_memory_mb: int | None = Field(
        512, gt=0, description="ray_data: object-store memory (MiB) the train pipeline (and a streamed val) may "
        "hold at once on its way to the workers; null = Ray Data's own budget (a share of the object store). "
        "At 100k sequences on 2 cores, 512 against Ray Data's budget: first step 48 s against 81, peak worker "
        "RSS 1.6 against 3.4 GB, 156 against 147 samples/s (benchmarks/scale.py, 2026-11-27): unbounded, Ray "
        "Data reads far ahead of what the workers consume"
    )
    shuffle_buffer: int = Field(
        1024, ge=0, description="ray_data: rows in each worker's local shuffle buffer, on top of a new file order "
        "every epoch"
    )
    bucket_batches: int = Field(
        8, ge=1, description="rows of this many batches are sorted by length and cut into batches (less padding); "
        "1 = no grouping"
    )
    use_gpu: bool | None = Field(None, description="None = use GPUs when the cluster has them or its "
                                  "autoscaler can start GPU nodes (ray up clusters)")
    max_failures: int = Field(2, ge=-1, description="worker failures to recover from the last checkpoint")
    resume_from: str | None = Field(None, description="checkpoint folder to continue from")
    init_encoder: str | None = Field(
        None, description="start from this pre-trained encoder (a file `asl-ray pretrain` wrote); the CTC head "
        "starts fresh; ignored when resuming a run")
    checkpoints_to_keep: int = Field(2, gt=0)

    @model_validator(mode="after")
    def _sentences_need_ray_data(self) -> TrainConfig:
        if self.sentences.used and self.ingest != "ray_data":
            raise ValueError("train.sentences needs train.ingest=ray_data (sentences are built by Ray Data)")
        return self

    @model_validator(mode="after")
    def _cutmix_share_range(self) -> TrainConfig:
        lo, hi = self.cutmix_share
        if not 0 < lo <= hi < 1:
            raise ValueError(f"train.cutmix_share must be [low, high], 0 < low <= high < 1: {self.cutmix_share}")
        return self


class PretrainConfig(_Section):
    """``asl-ray pretrain``: masked-landmark reconstruction, no labels (pretrain.py).
    On WLASL100 (716 sequences) it does not pay: README, row 18."""

    epochs: int = Field(30, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    mask_ratio: float = Field(0.5, gt=0, lt=1, description="share of each sequence's frames hidden")
    mask_span: int = Field(8, gt=0, description="frames hidden together: a span, not scattered frames, so "
                           "a hidden frame cannot be read off its two neighbours")
    extra_datasets: list[str] = Field(
        default_factory=list, description="other feature datasets (folders `asl-ray extract` wrote) whose "
        "sequences are added, every split, labels unused; the config's own dataset gives its train split only")
    output: str = Field("runs/pretrain/encoder.pt", description="where the pre-trained encoder is written "
                        "(local path or URI); its loss curve goes beside it (encoder.png)")


class TrackingConfig(_Section):
    """MLflow: by default a sqlite store under train.run_dir."""

    uri: str | None = Field(None, description="tracking URI; None = sqlite:///<run_dir>/mlflow.db")
    experiment: str = Field("asl-ray", description="MLflow experiment name")
    enabled: bool = True


class Domain(_Section):
    """One search dimension. choice/grid take ``values``; uniform/loguniform/randint take low/high."""

    type: Literal["choice", "grid", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Domain:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"a {self.type} domain needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} domain needs low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform domain needs low > 0")
        return self


class TuneConfig(_Section):
    """Ray Tune search over any config keys, with ASHA early stopping."""

    name: str | None = Field(None, description="tune run name (default: a timestamp)")
    num_samples: int = Field(8, gt=0, description="trials (per grid point when a grid domain is used)")
    search_space: dict[str, Domain] = Field(default_factory=dict, description="dotted config key -> domain")
    metric: Literal["val_top1", "val_loss"] = "val_top1"
    searcher: Literal["random", "optuna"] = Field("random", description="optuna needs the 'optuna' extra")
    grace_period: int = Field(3, gt=0, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    max_concurrent_trials: int | None = Field(None, gt=0, description="None = what the cluster fits")
    seed: int | None = 0

    @model_validator(mode="after")
    def _keys_exist(self) -> TuneConfig:
        for key in self.search_space:
            section, _, field_name = key.partition(".")
            model = _SECTIONS.get(section)
            if model is None or not field_name or field_name.split(".")[0] not in model.model_fields:
                raise ValueError(f"tune.search_space.{key}: not a config key (e.g. model.hidden_size)")
        return self


class RayConfig(_Section):
    """How to reach Ray: a local single-node instance unless an address is given."""

    address: str | None = Field(None, description="'auto' or ray://host:port; None = local")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the local instance")
    dashboard_host: str = Field("127.0.0.1", description="bind address of the dashboard")
    include_dashboard: bool = Field(True, description="Train-in-Tune needs the dashboard")


class Config(_Section):
    """The whole tree; each command reads the sections it needs."""

    data: DataConfig
    extract: ExtractConfig = ExtractConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    tune: TuneConfig = TuneConfig()
    ray: RayConfig = RayConfig()


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return str(Path(path).resolve())


def resolve_paths(cfg: Config) -> Config:
    """The config with every local path made absolute.

    Ray workers do not run in the driver's working directory, so everything
    handed to them must not depend on it. URIs (s3://...) are left alone.
    """
    data = cfg.data.model_copy(update={
        k: Path(v).resolve() for k in ("wlasl_json", "videos_dir", "asl_signs_dir", "pose_labels")
        if (v := getattr(cfg.data, k)) is not None
    })
    return cfg.model_copy(update={
        "data": data,
        "extract": cfg.extract.model_copy(update={"output_dir": _absolute(cfg.extract.output_dir)}),
        "train": cfg.train.model_copy(update={"run_dir": _absolute(cfg.train.run_dir),
                                              "resume_from": _absolute(cfg.train.resume_from),
                                              "init_encoder": _absolute(cfg.train.init_encoder),
                                              "distill_from": [str(_absolute(d)) for d in cfg.train.distill_from]}),
    })


_SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "extract": ExtractConfig, "features": FeaturesConfig, "model": ModelConfig,
    "train": TrainConfig, "pretrain": PretrainConfig, "tracking": TrackingConfig, "ray": RayConfig,
}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``model.hidden_size=64`` -> ("model.hidden_size", 64); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. model.hidden_size=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        owner: Any = model
        for part in err["loc"][:-1]:
            is_model = isinstance(owner, type) and issubclass(owner, BaseModel)
            field = owner.model_fields.get(str(part)) if is_model else None
            owner = field.annotation if field is not None else None
        is_model = isinstance(owner, type) and issubclass(owner, BaseModel)
        allowed = ", ".join(owner.model_fields) if is_model else "?"
        return f"{loc}: unknown key (allowed: {allowed})"
    if err["type"] == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        # Cross-field checks already name their keys ("model.attention_heads=3: ...").
        if not err["loc"] or msg.split(".")[0] in Config.model_fields:
            return msg
    value = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}={value!r}: {msg}" if loc else msg


def validate_tree(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(f"{source}: {_describe(dict(first), Config)}{tail}") from None


def load_config(path: Path | str | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, validate the result.

    Relative paths inside the YAML are resolved against the current directory,
    which is how every command in the README is run (from the project root).
    ``path`` may be a URI (a tune's ``best_config.yaml`` on ``s3://``).
    """
    tree: dict[str, Any] = {}
    if path is not None:
        from asl_ray.storage import read_text

        text = read_text(str(path))
        if text is None:
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} invalid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        tree = loaded or {}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    return validate_tree(tree, str(path) if path is not None else "config")


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML that :func:`load_config` accepts as is."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
