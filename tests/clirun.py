"""Run the installed `bnnctl` exactly as a user does: a separate process, real exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def bnnctl(*args, cwd: Path, env: dict | None = None, timeout: float = 300, stdin: str | None = None) -> Run:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "bnnctl", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=stdin)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(run: Run, *fragments: str) -> None:
    """A user mistake: non-zero exit, one line on stderr naming what is wrong, no traceback."""
    assert run.code != 0, f"expected failure, got exit 0:\n{run.out}"
    assert "Traceback" not in run.err, run.err
    lines = [line for line in run.err.strip().splitlines() if line.strip()]
    assert len(lines) >= 1, "no error message"
    message = lines[-1]
    for fragment in fragments:
        assert fragment in run.err, f"{fragment!r} not in error: {run.err!r}"
    assert len(message) < 400
