"""The ``asl-ray`` command line: each command loads the config and calls one function."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asl_ray.config import Config, load_config
from asl_ray.errors import UserError

EPILOG = """\b
Examples:
  $ asl-ray manifest -c configs/wlasl100.yaml
  $ asl-ray manifest -c configs/wlasl100.yaml --set data.top_k_glosses=10
  $ asl-ray manifest -c configs/asl_signs.yaml
"""


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--config`` and repeatable ``--set key=value``, resolved into ``cfg``."""

    @click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), required=True,
                  help="YAML config from configs/.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a config value, e.g. --set model.hidden_size=64 (repeatable).")
    @functools.wraps(fn)
    def wrapper(config_path: Path, overrides: tuple[str, ...], **kwargs: Any) -> Any:
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
def main() -> None:
    """asl-ray: distributed landmark extraction, training and tuning for isolated sign recognition."""


@main.command(epilog=EPILOG)
@config_options
@click.option("--show-missing", type=int, default=20, show_default=True,
              help="How many missing video ids to list (all are counted).")
@click.option("--missing-out", type=click.Path(path_type=Path), default=None,
              help="Write every missing video id to this file, one a line.")
def manifest(cfg: Config, show_missing: int, missing_out: Path | None) -> None:
    """Count the samples of a dataset per split and gloss, and list missing files."""
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


if __name__ == "__main__":
    main()
