"""The frame fuzzer (``tests/fuzz/frames.py``) runs for a fixed budget from
the kept corpus: any frame sequence that makes a shard raise (an
``internal_errors`` count, a traceback in the loop) fails the suite with
the traceback and the input libFuzzer saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "fuzz" / "corpus"
FUZZ_SECONDS = 60

pytestmark = pytest.mark.timeout(FUZZ_SECONDS * 4)


def test_frames_from_the_wire_never_break_a_shard(tmp_path: Path) -> None:
    found = tmp_path / "new"
    found.mkdir()
    proc = subprocess.run(
        [
            sys.executable, "-m", "tests.fuzz.frames", str(found), str(CORPUS),
            f"-max_total_time={FUZZ_SECONDS}", f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=2048", "-print_final_stats=1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=FUZZ_SECONDS * 3,
    )  # fmt: skip
    log = "\n".join(line for line in proc.stderr.splitlines() if "Instrumenting" not in line)
    crashes = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert proc.returncode == 0, f"saved: {crashes}\n{log[-6000:]}"
    runs = [line for line in log.splitlines() if line.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > len(list(CORPUS.iterdir())), log[-3000:]
