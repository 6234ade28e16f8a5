"""Memory per file is bounded (issue 14, item 5): a picture within the pixel
limit but with a wide sample type (16-bit PNG, float TIFF) decodes without
full-size float64 copies. Each decode runs in a child process whose address
space is capped (so the code before the fix fails there, instead of taking
the machine's memory), and reports its peak RSS above idle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PIXELS_SIDE = 13_000  # 169 MP: under the 178 MP limit
PEAK_LIMIT = 1.5 * 2**30  # bytes of peak RSS above idle, per file
HEADROOM = 3 * 2**30  # the child's address space: idle + this

MAKE = textwrap.dedent("""
    import sys
    from PIL import Image
    mode, path, kwargs = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    Image.new(mode, (int(sys.argv[4]),) * 2).save(path, **kwargs)
""")

DECODE = textwrap.dedent("""
    import json, resource, sys
    from labelsd.model import decode
    decode.register_openers()
    data = open(sys.argv[1], "rb").read()
    vsz = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vsz + int(sys.argv[2]),) * 2)
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        out = decode.decode_for_inception(data)
        result = {"shape": list(out.pixels.shape), "width": out.width}
    except Exception as err:
        result = {"error": str(err)}
    result["peak_above_idle"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - idle
    print(json.dumps(result))
""")


@pytest.mark.parametrize("name, mode, kwargs", [
    ("grey16.png", "I;16", {}),
    ("float.tiff", "F", {"compression": "tiff_adobe_deflate"}),
    ("int32.tiff", "I", {"compression": "tiff_adobe_deflate"}),
    ("rgb.png", "RGB", {}),  # 8-bit: the reference, 0.63 GiB above idle when measured
])
def test_wide_samples_decode_within_the_memory_bound(tmp_path, name, mode, kwargs):
    path = tmp_path / name
    subprocess.run([sys.executable, "-c", MAKE, mode, str(path), repr(kwargs),
                    str(PIXELS_SIDE)], check=True, timeout=300)
    assert path.stat().st_size < 64 * 2**20  # small on disk: all of the cost is in decoding
    child = subprocess.run([sys.executable, "-c", DECODE, str(path), str(HEADROOM)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["shape"] == [299, 299, 3] and result["width"] == PIXELS_SIDE
    assert result["peak_above_idle"] < PEAK_LIMIT, f"{result['peak_above_idle'] / 2**30:.2f} GiB"
