"""A stand-in for valgrind in the fast tests: runs the target natively, writes cachegrind files.

Called as ``python fake_valgrind.py [valgrind options] PYTHON TARGET REQUEST``. It
runs the target natively (its children fork and exit as under valgrind), then
reads the target's outcome for the children's pids and writes each child's
``cg.<pid>`` file in the ``--cachegrind-out-file`` directory, with totals made
up from the environment:

- each offset pair: ``FAKE_STARTUP`` and ``FAKE_STARTUP + FAKE_OFFSET``;
- each cell's pair: ``FAKE_STARTUP + k * FAKE_PER_CALL`` and
  ``FAKE_STARTUP + 2k * FAKE_PER_CALL + FAKE_OFFSET``.

So the driver's arithmetic and checks can be tested without valgrind's 50x
slowdown. ``FAKE_NO_OUTPUT=1`` writes no file.
"""

import json
import os
import subprocess
import sys


def write(out_pattern: str, pid: int, total: int) -> None:
    with open(out_pattern.replace("%p", str(pid)), "w") as f:
        f.write(f"desc: fake\nevents: Ir\nsummary: {total}\n")


def main(argv: list[str]) -> int:
    options = [a for a in argv if a.startswith("--")]
    program = [a for a in argv if not a.startswith("--")]
    out = next(o.split("=", 1)[1] for o in options if o.startswith("--cachegrind-out-file="))
    code = subprocess.run(program).returncode
    if os.environ.get("FAKE_NO_OUTPUT") == "1" or code != 0:
        return code
    with open(program[-1]) as f:
        request = json.load(f)
    with open(request["outcome"]) as f:
        outcome = json.load(f)
    k, startup = request["calls"], int(os.environ["FAKE_STARTUP"])
    offset, per_call = int(os.environ["FAKE_OFFSET"]), int(os.environ["FAKE_PER_CALL"])
    for pair in outcome["offsets"]:
        write(out, pair["pids"][0], startup)
        write(out, pair["pids"][1], startup + offset)
    for cell in outcome["cells"]:
        if cell["status"] == "ok":
            write(out, cell["pids"][0], startup + k * per_call)
            write(out, cell["pids"][1], startup + 2 * k * per_call + offset)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
