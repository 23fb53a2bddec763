"""Samples the GPU's utilisation and memory every 0.5 s into a CSV
(unix time, utilisation %, memory used MiB) until killed; scripts/device_check.sh
runs it for its whole length and logs when each stage starts, so the busy
share of a stage is read off the rows between two stages' starts.

Utilisation is NVML's: the share of the sample period in which at least one
kernel ran on the GPU (not how full the multiprocessors were).
"""

from __future__ import annotations

import sys
import time

import pynvml  # nvidia-ml-py, on every machine with the NVIDIA driver's Python tools


def main() -> None:
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    with open(sys.argv[1], "w", buffering=1) as out:
        out.write("time,util_pct,mem_mib\n")
        while True:
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            out.write(f"{time.time():.2f},{util},{mem:.0f}\n")
            time.sleep(0.5)


if __name__ == "__main__":
    main()
