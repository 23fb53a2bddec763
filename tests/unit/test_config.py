from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asl_ray.cli import main
from asl_ray.config import dump_config, load_config, parse_override
from asl_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_opens_with_its_run_command(path: Path) -> None:
    cfg = load_config(path)
    assert load_config(path, ()) == cfg
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), f"{path.name} must open with a comment"
    assert "asl-ray " in path.read_text().split("\n\n")[0] or "asl-ray " in "".join(
        line for line in path.read_text().splitlines() if line.startswith("#")
    )


def test_shipped_configs_exist() -> None:
    assert len(CONFIGS) >= 2


def test_override_values_are_yaml_typed() -> None:
    assert parse_override("data.top_k_glosses=10") == ("data.top_k_glosses", 10)
    assert parse_override("ray.address=auto") == ("ray.address", "auto")
    assert parse_override("ray.include_dashboard=false") == ("ray.include_dashboard", False)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("data.top_k_glosses")


def test_dump_roundtrips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS[0], ["data.top_k_glosses=7"])
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert load_config(out) == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.top_k_glosses=-3", "data.top_k_glosses=-3: Input should be greater than 0"),
        ("data.subset=7", "data.subset=7: Input should be 100, 300, 1000 or 2000"),
        ("data.hiden_size=3", "data.hiden_size: unknown key (allowed: source,"),
        ("bogus.x=1", "bogus: unknown key (allowed: data, "),
        ("ray.num_cpus=two", "ray.num_cpus='two': Input should be a valid integer"),
    ],
)
def test_bad_config_is_one_line_exit_2(override: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["manifest", "-c", str(CONFIGS[0]), "--set", override])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_bad_config_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: wlasl\n  wlasl_json: x.json\n  unknown: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "asl_ray.cli", "manifest", "-c", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "data.unknown: unknown key" in proc.stderr


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: [wlasl\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config(bad)


def test_missing_required_path_for_source() -> None:
    with pytest.raises(ConfigError, match="data.asl_signs_dir is required"):
        load_config(None, ["data.source=asl-signs"])


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "manifest" in result.output
