"""`make bench`: every benchmark in one run, then the issue's ratios from that run together.

Runs bench_env.py (the simulator, collection), bench_train.py (the cores, Lightning's loop),
bench_sampling.py (open loop and scheduled sampling against teacher forcing), bench_losses.py
(the open-loop step's loss terms and flow warp against what they replaced) and bench_data.py
(the DataLoader against a raw gather, DDP memory, a dataset above a memory cap), each in its own
process with OMP_NUM_THREADS=1 unless set, and prints their output as it comes. A line with a
**bold** figure is a ratio of the issue; they are printed again at the end, with the machine,
the date and the load.
"""

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_env.py", "bench_train.py", "bench_sampling.py", "bench_losses.py",
           "bench_data.py")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started, load = datetime.datetime.now(datetime.UTC), os.getloadavg()[0]
    ratios, failed = [], []
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        proc = subprocess.Popen([sys.executable, str(HERE / script)], cwd=HERE.parent, env=env,
                                stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            print(line, end="", flush=True)
            if "**" in line:
                ratios.append(f"{script}: {line.strip()}")
        if proc.wait():
            failed.append(script)
    print(f"\n== the issue's ratios, from this run: {os.cpu_count()} cores, {cpu_name()}, "
          f"{started:%Y-%m-%d %H:%M} UTC, load average {load:.1f} at the start and "
          f"{os.getloadavg()[0]:.1f} at the end")
    for line in ratios:
        print(line)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
