"""Restart decisions for the embedded platform's processes: Kubernetes' restartPolicy, back-off, a log tail."""

from __future__ import annotations

import os
from dataclasses import dataclass

RESTART_POLICIES = ("Always", "OnFailure", "Never")  # a Pod's restartPolicy; Always is Kubernetes' default


def should_restart(policy: str, exit_code: int) -> bool:
    """Kubernetes' rule: Always restarts, OnFailure only after a non-zero exit, Never does not."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass(frozen=True)
class BackOff:
    """Exponential back-off between restarts, as a kubelet's CrashLoopBackOff but shorter (a local mesh): the
    delay doubles from `initial` up to `cap`; a process that ran `stable` seconds starts again from `initial`;
    after `limit` restarts in a row that each ran less than `stable`, the platform gives up (a crash loop)."""

    initial: float = 1.0
    cap: float = 30.0
    stable: float = 10.0
    limit: int = 5

    def failures(self, previous: int, ran_for: float) -> int:
        """Consecutive quick failures, counting this exit."""
        return previous + 1 if ran_for < self.stable else 1

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number `failures` (1, 2, ...)."""
        return float(min(self.initial * 2 ** max(failures - 1, 0), self.cap))

    def gives_up(self, failures: int) -> bool:
        return failures > self.limit


def log_tail(path: str, lines: int = 12, max_bytes: int = 16384) -> str:
    """The last lines of a log file, indented for the terminal ("" when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join("    | " + ln for ln in tail)
