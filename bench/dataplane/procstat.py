"""CPU seconds and peak RSS of a process, read from /proc (Linux)."""

from __future__ import annotations

import os
import pathlib

from bench.dataplane.errors import BenchError

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, proc_root: str = "/proc") -> float:
    """utime + stime of pid in seconds (all threads), from /proc/<pid>/stat."""
    text = pathlib.Path(proc_root, str(pid), "stat").read_text()
    return parse_stat_cpu(text)


def parse_stat_cpu(text: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in seconds."""
    rest = text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / _CLK_TCK


def peak_rss_mb(pid: int, proc_root: str = "/proc") -> float:
    """VmHWM (peak resident set size) of pid in MiB, from /proc/<pid>/status."""
    return parse_status_hwm(pathlib.Path(proc_root, str(pid), "status").read_text())


def parse_status_hwm(text: str) -> float:
    """VmHWM of a /proc/<pid>/status text, in MiB."""
    return parse_status_field(text, "VmHWM")


def rss_anon_mb(pid: int, proc_root: str = "/proc") -> float:
    """RssAnon (private heap and stacks, without the shared binary's pages) of pid in MiB, now."""
    return parse_status_field(pathlib.Path(proc_root, str(pid), "status").read_text(), "RssAnon")


def parse_status_field(text: str, name: str) -> float:
    """A `Name:  N kB` field of a /proc/<pid>/status text, in MiB."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024.0
    raise BenchError(f"{name} not found in /proc status text")
