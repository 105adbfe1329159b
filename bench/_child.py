"""Run one side of a side-by-side benchmark in its own process (imported by scripts run as
`python bench/NAME.py`): the script calls itself as `--child SIDE CFG_JSON` and prints one line
`RESULT {json}`, which comes back as a dict, or `{"error": the last lines of its output}`."""
from __future__ import annotations

import json
import os
import subprocess


def run_child(python: str, script, side: str, cfg: dict, env: dict | None = None, tail: int = 5) -> dict:
    """`python script --child side json(cfg)` with `env` added to this process's environment."""
    proc = subprocess.run([python, str(script), "--child", side, json.dumps(cfg)], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-tail:]}
    return json.loads(lines[-1][len("RESULT "):])
