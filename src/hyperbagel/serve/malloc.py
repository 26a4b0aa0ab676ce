"""The demo server's heap: glibc's malloc kept from growing under many request threads (docs/demo.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
import time


def _glibc():
    """The C library when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    if platform.libc_ver()[0] != "glibc" or not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``, as ``MALLOC_ARENA_MAX`` would).

    Gradio runs requests on a pool of threads, and glibc gives each thread an arena of its own, where the freed
    tensors of varying sizes fragment: under 20 clients the server's memory kept growing by ~6 MB a minute with the
    default arenas and by ~2 MB a minute with two (docs/demo.md). False where the C library is not glibc."""
    libc = _glibc()
    return bool(libc and libc.mallopt(-8, arenas))  # M_ARENA_MAX


def trim_malloc_every(seconds: float = 10.0) -> bool:
    """Hand freed heap memory back to the system every ``seconds`` (glibc's ``malloc_trim(0)``, on a daemon
    thread). What still grew with two arenas was memory freed but kept by malloc: one trim by hand took a server
    from 551 to 530 MB (docs/demo.md). False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False

    def trim() -> None:
        while True:
            time.sleep(seconds)
            libc.malloc_trim(0)

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
    return True
