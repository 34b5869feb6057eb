"""Process helpers: exit codes survive reaping by `alive`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from mesh.local import process


def test_exit_code_of_a_child_reaped_by_alive_is_kept():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process.alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.exit_code(proc) == -signal.SIGKILL  # Popen alone would now report 0


def test_exit_code_falls_back_to_popen():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(10)
    assert process.exit_code(proc) == 3
