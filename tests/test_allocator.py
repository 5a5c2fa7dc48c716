"""allocator.keep_freed_memory: large blocks come from the heap glibc keeps, not fresh pages."""

import ctypes
import subprocess
import sys

import pytest

from tests.helpers import ROOT

# How many bytes glibc holds in blocks it mapped for their own (mallinfo2's hblkhd) before and
# after a 16 MB tensor is made, in a fresh process: its thresholds are per process.
SCRIPT = """
import ctypes, sys, torch
from world_models.allocator import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
frames = torch.ones(4 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not glibc_with_mallinfo2(), reason="needs glibc >= 2.33")
def test_a_large_tensor_comes_from_the_kept_heap_not_its_own_pages():
    assert mapped_bytes("plain") >= 16 << 20  # glibc default: its own pages, unmapped when freed
    assert mapped_bytes("keep") == 0
