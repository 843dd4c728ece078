"""How much memory a request may take: checked up front, so that an impossible request
(n = 10**9 images) fails at once with a clear message instead of swapping or dying."""

from __future__ import annotations

import os

from ..errors import AigcError

# Leave this share of the available memory to everything else on the machine.
_USABLE_SHARE = 0.8


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


# Below this a request is not worth a read of /proc/meminfo (it showed at batch 1).
_ALWAYS_FITS = 64 * 2**20


def check_fits(what: str, nbytes: int) -> None:
    if nbytes <= _ALWAYS_FITS:
        return
    available = available_bytes()
    if nbytes > _USABLE_SHARE * available:
        raise AigcError(f"{what} needs {nbytes / 2**30:.1f} GiB of memory, but only "
                        f"{available / 2**30:.1f} GiB is available")
