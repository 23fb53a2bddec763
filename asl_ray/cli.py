"""The ``asl-ray`` command line: each command loads the config and calls one function."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asl_ray.config import Config, load_config
from asl_ray.console import native_logs_to_file
from asl_ray.errors import UserError

EPILOG = """\b
Examples:
  $ asl-ray run -c configs/quickstart.yaml
  $ asl-ray manifest -c configs/wlasl100.yaml
  $ asl-ray manifest -c configs/wlasl100.yaml --set data.top_k_glosses=10
  $ asl-ray manifest -c configs/asl_signs.yaml
  $ asl-ray extract -c configs/wlasl100.yaml
  $ asl-ray extract -c configs/wlasl100.yaml --set extract.limit=8 --set extract.num_actors=2
  $ asl-ray extract -c configs/asl_signs.yaml
  $ asl-ray extract -c configs/wlasl100.yaml --retry-failed
  $ asl-ray export -c configs/wlasl100.yaml --format pose -o runs/wlasl100-poses
  $ asl-ray extract -c configs/wlasl100.yaml --set data.source=pose \\
        --set data.pose_labels=runs/wlasl100-poses/labels.csv --set extract.output_dir=runs/from-poses
  $ asl-ray train -c configs/asl_signs.yaml
  $ asl-ray train -c configs/wlasl100.yaml --set train.vocab_size=10 --set train.num_workers=2
  $ asl-ray train -c configs/wlasl100_attention.yaml --set train.sentences.share=0.5 \\
        --set train.sentences.val=100 --set train.peak_weight=1 --set train.peak_known_only=true
  $ asl-ray tune -c configs/tune.yaml
  $ asl-ray tune -c configs/tune.yaml --set tune.name=tune-1 --resume
  $ asl-ray ui -c configs/tune.yaml
  $ asl-ray evaluate --checkpoint runs/wlasl100/top10 --split val
  $ asl-ray evaluate --checkpoint runs/wlasl100/top10 --sentences 100
  $ asl-ray predict --checkpoint runs/wlasl100/top10 ../shared/data/wlasl100/videos/00623.mp4
  $ asl-ray show ../shared/data/wlasl100/videos/00623.mp4 -o runs/00623.png
  $ asl-ray show VIDEO -o sheet.png --checkpoint runs/wlasl100/top10
  $ asl-ray show VIDEO -o views.png --augment 7 -c configs/wlasl100_attention.yaml
"""


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--config`` and repeatable ``--set key=value``, resolved into ``cfg``."""

    @click.option("-c", "--config", "config_path", required=True, metavar="PATH|URI",
                  help="YAML config from configs/ (or a tune's best_config.yaml, local or at a URI).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a config value, e.g. --set model.hidden_size=64 (repeatable).")
    @functools.wraps(fn)
    def wrapper(config_path: str, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        cfg = load_config(config_path, overrides)
        return fn(cfg, **kwargs)

    return wrapper


class _Group(click.Group):
    """Turns :class:`UserError` into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asl-ray")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show Ray's and MediaPipe's own log lines (otherwise in their log files: "
              "/tmp/ray/session_latest/logs; /tmp/asl-ray-mediapipe-PID.log for predict and show).")
def main(verbose: bool) -> None:
    """asl-ray: distributed landmark extraction, training and tuning for isolated sign recognition."""
    from asl_ray.console import VERBOSE_ENV

    if verbose:
        os.environ[VERBOSE_ENV] = "1"


@main.command(epilog=EPILOG)
@config_options
@click.option("--show-missing", type=int, default=20, show_default=True,
              help="How many missing video ids to list (all are counted).")
@click.option("--missing-out", type=click.Path(path_type=Path), default=None,
              help="Write every missing video id to this file, one a line.")
def manifest(cfg: Config, show_missing: int, missing_out: Path | None) -> None:
    """Count the samples of a dataset per split and gloss, list missing files
    and byte-identical videos (duplicate groups) with what training drops."""
    from asl_ray.duplicates import drop_plan
    from asl_ray.manifest import build_manifest

    m = build_manifest(cfg.data)
    glosses = m.gloss_counts()
    click.echo(f"{m.kind} manifest: {m.table.num_rows} samples present, {len(glosses)} glosses, "
               f"{len(m.missing)} listed but missing")
    click.echo("per split: " + ", ".join(f"{k} {v}" for k, v in m.split_counts().items()))
    shown = list(glosses.items())[:20]
    click.echo("per gloss (most first): " + ", ".join(f"{g} {n}" for g, n in shown)
               + (f", ... {len(glosses) - len(shown)} more" if len(glosses) > len(shown) else ""))
    if m.missing:
        listed = ", ".join(m.missing[:show_missing])
        more = f", ... {len(m.missing) - show_missing} more" if len(m.missing) > show_missing else ""
        click.echo(f"missing: {listed}{more}")
    if missing_out is not None:
        missing_out.write_text("".join(f"{v}\n" for v in m.missing))
        click.echo(f"wrote {len(m.missing)} missing ids to {missing_out}")
    groups = m.duplicates()
    if m.table.num_rows and m.table.column("content_hash").null_count == m.table.num_rows:
        click.echo("duplicates: not checked here (asl-signs files are hashed at import; training checks them)")
    elif groups:
        click.echo(f"duplicate groups (byte-identical files): {len(groups)}, "
                   f"{sum(g.conflicting for g in groups)} with conflicting glosses, "
                   f"{sum(g.cross_split for g in groups)} across splits")
        for g in groups:
            click.echo(f"  {g.line()}")
        if cfg.data.duplicates == "drop":
            click.echo(drop_plan(m.table).line())
    else:
        click.echo("duplicate groups (byte-identical files): none")


@main.command(epilog=EPILOG)
@config_options
def run(cfg: Config) -> None:
    """The whole pipeline: extract, train, a small tune, evaluate; ends with a summary.

    Uses real videos when the configured dataset is on disk, otherwise a small,
    clearly labelled synthetic landmark dataset (from features on).
    """
    from asl_ray.pipeline import run_pipeline

    run_pipeline(cfg, echo=click.echo)


@main.command(epilog=EPILOG)
@config_options
@click.option("--retry-failed", is_flag=True,
              help="Extract the videos whose rows failed again (their new rows replace the failed ones).")
def extract(cfg: Config, retry_failed: bool) -> None:
    """Extract landmarks and features of every pending video into the Parquet dataset.

    Videos already in extract.output_dir are skipped, so an interrupted run is
    resumed by running the same command again. Videos that cannot be read
    become rows with status 'failed' and a reason; the command still exits 0.
    A video that crashes the extractor process is tried extract.max_retries
    more times, then fails with "extractor crashed".
    """
    from asl_ray.extract import run_extract

    if retry_failed:
        cfg.extract.retry_failed = True
    run_extract(cfg, echo=click.echo)


@main.command(epilog=EPILOG)
@config_options
@click.option("--format", "fmt", type=click.Choice(["pose"]), default="pose", show_default=True,
              help="pose: pose-format's .pose files (MediaPipe Holistic layout).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder to write into.")
def export(cfg: Config, fmt: str, out: Path) -> None:
    """Write the feature dataset's landmarks as one .pose file per video, plus a
    labels.csv that `data.source: pose` (--set data.pose_labels=OUT/labels.csv)
    reads back. The landmarks are the normalised ones, drawn upright on a
    512-pixel canvas, so pose-format's visualiser shows them."""
    from asl_ray.pose_files import export_poses

    if not export_poses(cfg.extract.output_dir, out, click.echo):
        raise UserError(f"{cfg.extract.output_dir}: no ok rows to export (run `asl-ray extract` first)")


@main.command(epilog=EPILOG)
@config_options
def train(cfg: Config) -> None:
    """Train BiLSTM-CTC with Ray Train on the extracted feature dataset.

    Prints one line per epoch (loss, top-1, blank ratio), checkpoints every
    epoch under train.run_dir, logs everything to MLflow and ends with the best
    val accuracy, the best checkpoint and the plots.
    """
    from asl_ray.trainer import run_training

    run_training(cfg, echo=click.echo)


@main.command(epilog=EPILOG)
@config_options
def pretrain(cfg: Config) -> None:
    """Pre-train the encoder without labels (masked-landmark reconstruction).

    Reads the train split of extract.output_dir and every sequence of
    pretrain.extra_datasets (never a val or test video), hides spans of frames
    and learns to fill them in; prints a line per epoch and writes the encoder
    to pretrain.output. Train from it with --set train.init_encoder=FILE (same
    model and features sections).
    """
    from asl_ray.config import resolve_paths
    from asl_ray.pretrain import run_pretraining

    run_pretraining(resolve_paths(cfg), echo=click.echo)


@main.command(epilog=EPILOG)
@config_options
@click.option("--resume", is_flag=True, help="Continue the interrupted tune named by tune.name.")
def tune(cfg: Config, resume: bool) -> None:
    """Search hyper-parameters with Ray Tune (ASHA); every trial is a nested MLflow run.

    The search space is tune.search_space in the config. Prints a line per
    trial event and a ranked table at the end, with the best trial per
    vocabulary size and a best_config.yaml that `asl-ray train -c` accepts.
    """
    from asl_ray.search import run_tune

    run_tune(cfg, resume=resume, echo=click.echo)


@main.command(epilog=EPILOG)
@config_options
@click.option("--port", default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--print-only", is_flag=True, help="Print the mlflow command instead of running it.")
def ui(cfg: Config, port: int, host: str, print_only: bool) -> None:
    """Start the MLflow UI over the project's tracking store to compare runs and trials."""
    import shlex
    import subprocess

    from asl_ray.tracking import tracking_uri

    uri = tracking_uri(cfg)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    click.echo(f"MLflow UI on http://{host}:{port} over {uri}")
    if print_only:
        click.echo(shlex.join(["mlflow", *cmd[3:]]))
        return
    raise SystemExit(subprocess.call(cmd))


@main.command(epilog=EPILOG)
@click.argument("video", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write (default: <video name>_landmarks.png in the current folder).")
@click.option("--frames", default=8, show_default=True, help="How many evenly spaced frames to draw.")
@click.option("--checkpoint", default=None, metavar="PATH|URI",
              help="Also decode the video's gloss sequence with this checkpoint and mark each gloss's frames.")
@click.option("--augment", "draws", default=0, show_default=True, metavar="N",
              help="Instead, draw one frame of VIDEO as N augmented training views show it, with the "
              "train.augment of -c CONFIG (default name <video name>_augment.png).")
@click.option("-c", "--config", "config_path", default=None, metavar="PATH|URI",
              help="With --augment: the config whose train.augment (and features.dominant_hand) is drawn.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="With --augment: override a config value, e.g. --set train.augment.hand_shift=0.1.")
def show(video: Path, out: Path | None, frames: int, checkpoint: str | None, draws: int,
         config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Draw what MediaPipe found (pose, both hands) over frames of VIDEO into a PNG contact sheet;
    with --checkpoint, the glosses a model reads and the frames where it reads them; with --augment,
    what training's augmentation makes of the landmarks."""
    from asl_ray.landmarks import ExtractionError
    from asl_ray.show import contact_sheet

    if draws or config_path or overrides:
        _show_augment(video, out, draws, config_path, overrides, checkpoint)
        return
    spans = None
    if checkpoint:
        from asl_ray.checkpoint import load_checkpoint
        from asl_ray.evaluation import predict_videos

        with native_logs_to_file():
            (pred,) = predict_videos(load_checkpoint(checkpoint), [video], 1)
        if isinstance(pred, str):
            raise UserError(pred)
        spans = pred.sequence
    try:
        with native_logs_to_file():
            png, presence = contact_sheet(video, out or Path(f"{video.stem}_landmarks.png"), frames, spans=spans)
    except ExtractionError as exc:
        raise UserError(f"{video}: {exc}") from None
    click.echo(f"wrote {png}: pose in {presence['pose']:.0%} of frames, left hand {presence['left']:.0%}, "
               f"right hand {presence['right']:.0%}")
    if spans is not None:
        click.echo("decoded: " + (", ".join(f"{g} (frames {a + 1}-{b + 1})" for g, a, b in spans)
                                  or "nothing (every frame blank)"))


def _show_augment(video: Path, out: Path | None, draws: int, config_path: str | None,
                  overrides: tuple[str, ...], checkpoint: str | None) -> None:
    import numpy as np

    from asl_ray.features import video_features
    from asl_ray.landmarks import ExtractionError, LandmarkExtractor
    from asl_ray.samples import as_read
    from asl_ray.show import augment_sheet

    if checkpoint:
        raise UserError("--augment and --checkpoint draw different sheets: give one of them")
    if not draws:
        raise UserError("-c and --set go with --augment N: the number of augmented views to draw")
    if draws < 0 or draws > 63:
        raise UserError(f"--augment {draws}: draw between 1 and 63 augmented views")
    if not config_path:
        raise UserError("--augment needs -c CONFIG: the train.augment it draws")
    cfg = load_config(config_path, overrides)
    try:
        with native_logs_to_file():
            ext = LandmarkExtractor()
            try:
                lm = ext.extract(video)
            finally:
                ext.close()
    except ExtractionError as exc:
        raise UserError(f"{video}: {exc}") from None
    if not np.isfinite(lm.pose[..., 0]).any():
        raise UserError(f"{video}: no pose found in any frame, so there is no body frame to draw in")
    landmarks = video_features(lm.pose, lm.left, lm.right, lm.fps or 25.0).landmarks
    landmarks = as_read(landmarks, cfg.features)
    png = out or Path(f"{video.stem}_augment.png")
    aug = cfg.train.augment
    augment_sheet(landmarks, png, aug, draws, seed=cfg.train.seed, title=(
        f"{video.name}: one frame as extracted and in {draws} augmented views (grey: as extracted); "
        f"speed {aug.speed}, rotation {aug.rotate_deg:g}, scale {aug.scale:g}, shear {aug.shear:g}, "
        f"hands: rotation {aug.hand_rotate_deg:g}, scale {aug.hand_scale:g}, shift {aug.hand_shift:g}, "
        f"mirror {aug.mirror:g}" + ("" if aug.enabled else " (augmentation off)")))
    click.echo(f"wrote {png}: one frame of {lm.num_frames} as extracted and in {draws} augmented views "
               f"(seeds {cfg.train.seed}-{cfg.train.seed + draws - 1})")


def _checkpoint_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--checkpoint", required=True, metavar="PATH|URI",
                        help="A checkpoint folder (model.pt, vocab.json, config.yaml), or a run folder: its best "
                        "checkpoint. A local path or a URI (s3://...).")(fn)


def _decoding_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--merge-repeats/--keep-repeats", "merge_repeats", default=None,
                      help="Read a gloss read twice in a row as one (PHOENIX-2014's scoring convention: a "
                      "sign's repeated movement is one sign), in readings and references; default: the "
                      "checkpoint's train.sentences.merge_repeats.")(fn)
    fn = click.option("--prior-weight", type=float, default=None,
                      help="Weight of the prior's log-probability per gloss (default: the checkpoint's "
                      "train.sentences.prior_weight).")(fn)
    return click.option("--prior", "prior", type=click.Path(path_type=Path), default=None,
                        help="Gloss sentences (one per line) whose bigrams guide beam search; off by default.")(fn)


def _speeds(text: str | None) -> tuple[float, ...]:
    if not text:
        return (1.0,)
    try:
        speeds = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers, e.g. 0.9,1,1.1") from None
    if any(not 0.25 <= v <= 4 for v in speeds):
        raise click.BadParameter(f"{text!r}: speeds must lie between 0.25 and 4")
    return speeds


@main.command(epilog=EPILOG)
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="PATH|URI",
              help="A checkpoint folder (model.pt, vocab.json, config.yaml), or a run folder: its best "
              "checkpoint, local or a URI (s3://...). Give it several times to evaluate the ensemble "
              "(posteriors averaged).")
@click.option("--split", default="val", show_default=True,
              help="Any split of the feature dataset: val, train, test (when your data has it), ...")
@click.option("--tta-speeds", default=None, metavar="S1,S2,...",
              help="Test-time augmentation: average over the sequence played at these speeds, e.g. 0.9,1,1.1.")
@click.option("--tta-mirror", is_flag=True,
              help="Test-time augmentation: average over each sequence and its mirror image (left and right "
              "swapped, as train.augment.mirror trains on); on WLASL100 -0.6 val top-1 over 8 models (README, "
              "row 41).")
@click.option("--features", "features_dir", default=None, help="Feature dataset (default: the run's own).")
@click.option("--out", default=None, metavar="PATH|URI",
              help="Folder for confusion_matrix.png and per_class.csv (default: next to the first checkpoint).")
@click.option("--show", default=15, show_default=True, help="How many of the worst glosses to print.")
@click.option("--sentences", default=0, show_default=True, metavar="N",
              help="Also score N seeded sentences of 2-5 clips of the split (continuous signing): word error "
              "rate with greedy and beam-search decoding.")
@_decoding_options
def evaluate(checkpoints: tuple[str, ...], split: str, tta_speeds: str | None, tta_mirror: bool,
             features_dir: str | None, out: str | None, show: int, sentences: int, prior: Path | None,
             prior_weight: float | None, merge_repeats: bool | None) -> None:
    """Top-1, top-5, mean per-class accuracy and a per-class table of a checkpoint (or an ensemble);
    with --sentences N, the word error rate on sentences made of the split's clips."""
    import tempfile

    from asl_ray.checkpoint import load_checkpoint, resolve_checkpoint
    from asl_ray.evaluation import evaluate_checkpoint, evaluate_ensemble, evaluate_sentences
    from asl_ray.plots import confusion_matrix
    from asl_ray.storage import join, put_file, write_text

    speeds = _speeds(tta_speeds)
    if sentences < 0:
        raise click.BadParameter(f"{sentences}: expected a count >= 0", param_hint="--sentences")
    cks = [load_checkpoint(c).with_decoding(prior, prior_weight, merge_repeats) for c in checkpoints]
    merged = " (repeats merged)" if cks[0].cfg.train.sentences.merge_repeats else ""
    single = len(cks) == 1 and speeds == (1.0,) and not tta_mirror
    ev = evaluate_checkpoint(cks[0], split, features_dir) if single else evaluate_ensemble(
        cks, split, features_dir, speeds, tta_mirror)
    m = ev.metrics
    n = int(ev.confusion.sum())
    what = "" if single else (f" | ensemble of {len(cks)} checkpoint(s) x {len(speeds)} speed(s)"
                              + (" x 2 (mirrored)" if tta_mirror else ""))
    line = (f"{split}: {n} samples, {cks[0].vocab.num_glosses} glosses{what} | top1 {m['top1']:.1%} "
            f"top5 {m['top5']:.1%} mean per-class {m['mean_class_acc']:.1%}")
    if single:
        # Why greedy misses where the exact ranking is right: a clip read as
        # nothing (blank everywhere), or as two glosses (an insertion).
        line += (f" | greedy{merged} {m['greedy_acc']:.1%} (read as nothing {m['greedy_empty']:.1%}, as 2+ "
                 f"glosses {m['greedy_extra']:.1%}) blank ratio {m['blank_ratio']:.2f} loss {m['loss']:.3f}")
    click.echo(line)
    click.echo(f"{'gloss':<16} {'n':>3} {'top1':>6}  most confused with")
    for gloss, count, acc, confused in ev.per_class[:show]:
        click.echo(f"{gloss:<16} {count:>3} {acc:>6.0%}  {confused}")
    if len(ev.per_class) > show:
        click.echo(f"... {len(ev.per_class) - show} more glosses in per_class.csv")
    # Next to the checkpoint (local folder or URI) unless --out says otherwise.
    resolved = resolve_checkpoint(checkpoints[0])
    parent, ck_name = resolved.rstrip("/").rsplit("/", 1)
    where = str(out) if out else join(parent, f"eval-{ck_name}-{split}" if single else f"eval-ensemble-{split}")
    csv = write_text(join(where, "per_class.csv"), "gloss,samples,top1,most_confused_with\n" + "".join(
        f"{g},{c},{a:.4f},{x}\n" for g, c, a, x in ev.per_class))
    with tempfile.TemporaryDirectory() as tmp:
        png = put_file(confusion_matrix(ev.confusion, cks[0].vocab.glosses, Path(tmp) / "confusion_matrix.png",
                                        f"{split} confusion{what.replace(' | ', ', ')}"),
                       join(where, "confusion_matrix.png"))
    click.echo(f"wrote {csv} and {png}")
    if sentences:
        se = evaluate_sentences(cks, split, sentences, features_dir=features_dir)
        click.echo(f"{split} sentences: {se.sentences} of 2-5 clips, {se.glosses} glosses{merged} | WER greedy "
                   f"{se.wer_greedy:.1%}, beam {se.wer_beam:.1%}"
                   + (f" (ensemble of {len(cks)})" if len(cks) > 1 else "")
                   + (" (sentences without test-time augmentation)" if speeds != (1.0,) or tta_mirror else ""))
        click.echo(f"  greedy: {se.kinds_greedy.describe(se.glosses)}; beam: {se.kinds_beam.describe(se.glosses)}")
        for ref, g, b in se.examples:
            click.echo(f"  {' '.join(ref):<40} greedy: {' '.join(g) or '-'} | beam: {' '.join(b) or '-'}")


@main.command(epilog=EPILOG)
@_checkpoint_option
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-k", "--top", default=5, show_default=True, help="How many glosses to show per video.")
@_decoding_options
def predict(checkpoint: str, videos: tuple[Path, ...], top: int, prior: Path | None,
            prior_weight: float | None, merge_repeats: bool | None) -> None:
    """Top-k glosses with probabilities for each VIDEO (extracted like the dataset), and the
    gloss sequence CTC decodes from it (several signs), each gloss with its video frames."""
    from asl_ray.checkpoint import load_checkpoint
    from asl_ray.evaluation import predict_videos

    ck = load_checkpoint(checkpoint).with_decoding(prior, prior_weight, merge_repeats)
    with native_logs_to_file():
        predictions = predict_videos(ck, list(videos), top)
    for p in predictions:
        if isinstance(p, str):
            click.echo(f"failed: {p}")
            continue
        click.echo(f"{p.video} ({p.frames} frames, a hand in {p.hands_found:.0%} of them):")
        for gloss, prob in p.top:
            click.echo(f"  {gloss:<16} {prob:6.1%}")
        seq = ", ".join(f"{g} [frames {a}-{b}]" for g, a, b in p.sequence)
        click.echo(f"  sequence: {seq or '- (nothing decoded: every frame blank)'}")


if __name__ == "__main__":
    main()
