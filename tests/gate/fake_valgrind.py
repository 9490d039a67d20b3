"""A stand-in for valgrind in the fast tests: runs the program natively, writes a cachegrind file.

Called as ``python fake_valgrind.py [valgrind options] PROGRAM ARGS...``. It runs
PROGRAM natively, then writes ``--cachegrind-out-file`` with one total,
``FAKE_STARTUP + FAKE_PER_CALL * calls`` instructions (``calls`` read from the
target's request, the last argument), so the driver's arithmetic and checks can
be tested without valgrind's 50x slowdown. ``FAKE_NO_OUTPUT=1`` writes nothing.
"""

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    options = [a for a in argv if a.startswith("--")]
    program = [a for a in argv if not a.startswith("--")]
    out = next(o.split("=", 1)[1] for o in options if o.startswith("--cachegrind-out-file="))
    code = subprocess.run(program).returncode
    with open(program[-1]) as f:
        calls = json.load(f)["calls"]
    if os.environ.get("FAKE_NO_OUTPUT") != "1":
        total = int(os.environ["FAKE_STARTUP"]) + int(os.environ["FAKE_PER_CALL"]) * calls
        with open(out, "w") as f:
            f.write(f"desc: fake\ncmd: {' '.join(program)}\nevents: Ir\nsummary: {total}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
