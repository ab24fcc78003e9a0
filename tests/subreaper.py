"""Run a command as a child subreaper and report what of its process tree outlived it.

Usage: python subreaper.py COMMAND... ; prints one JSON line: the command's exit code and every
process re-parented to us after the command ended, in any state (zombies included). This is
what a machine whose init never reaps orphans would be left with. Those processes are then
killed and reaped, so the report is the only trace they leave.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
SETTLE_S = 1.0  # descendants killed as the command exits take a moment to be re-parented


def main() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    command = subprocess.Popen(sys.argv[1:])
    print(json.dumps({"pid": command.pid}), flush=True)
    code = command.wait()
    time.sleep(SETTLE_S)
    adopted = []
    for child in psutil.Process().children(recursive=True):
        adopted.append({"pid": child.pid, "status": _status(child), "name": _name(child)})
        try:
            child.kill()
        except psutil.Error:
            continue
    while True:
        try:
            if os.waitpid(-1, 0)[0] == 0:
                break
        except ChildProcessError:
            break
    print(json.dumps({"exit_code": code, "adopted": adopted}), flush=True)


def _status(process: psutil.Process) -> str:
    try:
        return str(process.status())
    except psutil.ZombieProcess:
        return psutil.STATUS_ZOMBIE
    except psutil.Error:
        return "gone"


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200] or process.name()
    except psutil.Error:
        return "?"


if __name__ == "__main__":
    main()
