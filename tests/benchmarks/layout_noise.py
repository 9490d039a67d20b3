"""Which mechanisms move backward-pass timings on this machine (docs/noise.md).

A benchmark script, not a test (pytest does not collect it). From the repository root::

    python tests/benchmarks/layout_noise.py            # full run, 1.5-5 minutes
    python tests/benchmarks/layout_noise.py --quick    # under a minute
    python tests/benchmarks/layout_noise.py --parts ce # only some parts

Every timing is the CPU time of the timing thread (``time.thread_time_ns``) of one
backward call, BLAS limited to one thread (threadpoolctl), cyclic GC paused, the
variants of a cell interleaved in a freshly shuffled order every round (Abedi &
Brecht 2017). Every process runs with the workers' fixed glibc malloc thresholds
(``bench.measure.MALLOC_ENV``; the script re-executes itself to set them). Parts:

a. alignment: one process; every case and cache array copied to the same offset
   past a page boundary (0, 8, 16, 32, 48, 64, 72, 2056 bytes), plus "random"
   (:func:`bench.measure.rematerialise` every round, each array its own offset);
   each layout's paired ratio to offset 0, with a 95% bootstrap interval.
b. huge pages: separate processes with numpy's ``madvise(MADV_HUGEPAGE)`` for
   arrays of 4 MiB and more on or off (the flag cannot be undone inside one
   process: the heap keeps its advice), compared across processes.
c. address-space layout: separate processes with ASLR on or off (``setarch -R``):
   the spread of per-process medians and of the per-process ratio of two variants.
d. oversubscription: one process pinned to CPU 0, idle vs a busy loop (Python spin,
   or a numpy copy streaming 64 MiB) pinned to CPU 1 or to CPU 0 itself; CPU and
   wall clock per sample.
e. rematerialisation: separate processes (ASLR on), each interleaving a fixed
   layout, case and cache rematerialised every round, and every REMAT_EVERY_FEW
   rounds: the spread of the per-process ratio across processes, the copy's cost.

The load is watched around every part: the 1-minute load average, and the CPU
time used by other processes during the part (machine busy time from
``/proc/stat`` minus this process and its children), and hypervisor steal. A
part with more than LOAD_LIMIT cores of other work is rerun once (full runs).

References
----------
Curtsinger, C. & Berger, E. D. (2013). STABILIZER: statistically sound
performance evaluation. ASPLOS.
Mytkowicz, T. et al. (2009). Producing wrong data without doing anything
obviously wrong! ASPLOS: environment size and link order move timings.
Abedi, A. & Brecht, T. (2017). Conducting repeatable experiments in highly
variable cloud computing environments. ICPE: randomised multiple interleaved trials.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from gradsweep import measure, stats  # noqa: E402

#: Offsets (bytes past a page boundary) of part (a); 64 and 72 lie past a cache-line
#: boundary that is not a page boundary, 2056 mid-page.
ALIGN_OFFSETS = (0, 8, 16, 32, 48, 64, 72, 2056)
#: Part (e)'s "every few rounds".
REMAT_EVERY_FEW = 4
#: Cores of other processes' work during a part above which a full run reruns it.
LOAD_LIMIT = 0.5
#: A sample whose wall / CPU time exceeds this was descheduled (DESIGN.md, Measurement).
DESCHEDULED = 1.1
#: Untimed calls of each variant in each layout before the rounds.
WARMUP_CALLS = 2
#: Bytes the streaming busy loop copies per pass (twice the 32 MiB L3).
STREAM_BYTES = 64 * 2**20
#: Seconds a busy loop gets to start before a phase's samples.
BUSY_START_S = 0.3
NS_PER_MS = 1e6

T = TypeVar("T")


@dataclass(frozen=True)
class Cell:
    """A kernel at one shape (float64) and the two variants whose ratio is followed."""

    label: str
    kernel: str
    shape: dict
    variants: tuple[str, str]


CELLS = (
    Cell("lstm", "lstm", {"N": 16, "T": 32, "D": 32, "H": 64},
         ("lstm/buffers=prealloc,wgrad=batched,clip=none",
          "lstm/buffers=list,wgrad=step,clip=none")),
    Cell("rnn", "rnn", {"N": 32, "T": 32, "D": 64, "H": 128},
         ("rnn/buffers=prealloc,wgrad=step,clip=none",
          "rnn/buffers=list,wgrad=batched,clip=none")),
    Cell("deconv2d", "deconv2d", {},
         ("deconv2d/method=im2col", "deconv2d/method=gather")),
)


@dataclass(frozen=True)
class Plan:
    """How much of each part to run."""

    align_rounds: int
    hugepage_procs: int
    proc_count: int
    proc_rounds: int
    phase_s: float
    phase_cycles: int


FULL = Plan(align_rounds=50, hugepage_procs=5, proc_count=8, proc_rounds=40, phase_s=3.0,
            phase_cycles=2)
QUICK = Plan(align_rounds=8, hugepage_procs=2, proc_count=3, proc_rounds=10, phase_s=1.0,
             phase_cycles=1)


# --------------------------------------------------------------------------- materials

def short(variant: str) -> str:
    """``lstm/buffers=prealloc,wgrad=batched,clip=none`` -> ``prealloc,batched``."""
    values = [kv.split("=")[1] for kv in variant.split("/")[1].split(",")]
    return ",".join(v for v in values if v != "none")


def materials(cell: Cell) -> tuple[object, object, dict[str, Callable]]:
    """``(case, cache, {variant: backward})`` of a cell, float64, seed 0."""
    kernel = importlib.import_module(f"gradsweep.impls.{cell.kernel}").KERNEL
    case = kernel.make_case(kernel.full_shape(cell.shape), "float64", 0)
    _, cache = kernel.forward(case)
    return case, cache, {v: kernel.variants[v] for v in cell.variants}


def cpu_ns(fn: Callable, case: object, cache: object) -> int:
    """CPU time of the calling thread for one ``fn(case, cache)``."""
    start = time.thread_time_ns()
    fn(case, cache)
    return time.thread_time_ns() - start


def warm(fns: dict[str, Callable], layout: tuple) -> None:
    """WARMUP_CALLS untimed calls of every variant on ``layout = (case, cache)``."""
    for fn in fns.values():
        for _ in range(WARMUP_CALLS):
            fn(*layout)


# --------------------------------------------------------------------------- load

def _proc_stat() -> tuple[float, float]:
    """(busy, steal) seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu() -> float:
    """CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass(frozen=True)
class Load:
    """The machine around one part: load averages, and cores of others' work and steal."""

    before: float
    after: float
    other_cores: float
    steal_cores: float
    seconds: float

    def text(self) -> str:
        return (f"load avg {self.before:.2f} -> {self.after:.2f}; other processes "
                f"{self.other_cores:.2f} cores, steal {self.steal_cores:.2f} cores "
                f"over {self.seconds:.0f} s")


@contextmanager
def watched() -> Iterator[list[Load]]:
    """Yields a list that holds the part's :class:`Load` once the block ends."""
    out: list[Load] = []
    before, (busy0, steal0), own0, t0 = loadavg(), _proc_stat(), _own_cpu(), time.monotonic()
    yield out
    (busy1, steal1), own1, dt = _proc_stat(), _own_cpu(), time.monotonic() - t0
    other = max(busy1 - busy0 - (own1 - own0), 0.0) / dt
    out.append(Load(before, loadavg(), other, (steal1 - steal0) / dt, dt))


# --------------------------------------------------------------------------- statistics

def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def paired_text(a: list[float], b: list[float]) -> str:
    """Paired ratio a/b as a percent change with its 95% bootstrap interval."""
    low, high = stats.bootstrap_ci_ratio(a, b, paired=True)
    return f"{pct(stats.paired_ratio(a, b))} [{pct(low)},{pct(high)}]"


@dataclass(frozen=True)
class Spread:
    """How a quantity varies across processes."""

    low: float
    high: float
    sd_log: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        x = np.asarray(values, dtype=float)
        sd = float(np.std(np.log(x), ddof=1)) if x.size > 1 else 0.0
        return cls(float(x.min()), float(x.max()), sd)

    def text(self, fmt: str = ".3f") -> str:
        return (f"{self.low:{fmt}}-{self.high:{fmt}} (x{self.high / self.low:.3f}, "
                f"sd log {self.sd_log * 100:.1f}%)")


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


# --------------------------------------------------------------------------- (a) alignment

def _at(offset: int) -> Callable[[np.ndarray], int]:
    return lambda a: offset


def alignment_samples(plan: Plan, rng: np.random.Generator) -> dict:
    """samples[cell][layout][variant] = CPU ns per round, layouts interleaved."""
    mats = {c.label: materials(c) for c in CELLS}
    layouts = {c.label: {str(o): measure.relocate(mats[c.label][:2], _at(o))
                         for o in ALIGN_OFFSETS} for c in CELLS}
    out = {c.label: {name: {v: [] for v in c.variants} for name in [*layouts[c.label],
                                                                     "random"]}
           for c in CELLS}
    for c in CELLS:
        for layout in layouts[c.label].values():
            warm(mats[c.label][2], layout)
    keys = [(c.label, name) for c in CELLS for name in out[c.label]]
    with measure.gc_paused():
        for _ in range(plan.align_rounds):
            for c in CELLS:
                layouts[c.label]["random"] = measure.rematerialise(mats[c.label][:2], rng)
            for i in rng.permutation(len(keys)):
                label, name = keys[i]
                fns = mats[label][2]
                for j in rng.permutation(len(fns)):
                    v = list(fns)[j]
                    out[label][name][v].append(cpu_ns(fns[v], *layouts[label][name]))
    return out


def alignment_report(samples: dict) -> str:
    """Rows: layouts; columns: cell variants; paired change vs offset 0 [95% CI]."""
    cols = [(c.label, v) for c in CELLS for v in c.variants]
    header = ["layout", *[f"{lab} {short(v)}" for lab, v in cols]]
    base = [f"{np.median(samples[lab]['0'][v]) / NS_PER_MS:.3f} ms" for lab, v in cols]
    rows = [["offset 0 (median)", *base]]
    for name in [*map(str, ALIGN_OFFSETS[1:]), "random"]:
        label = f"offset {name}" if name != "random" else "random, new each round"
        rows.append([label, *[paired_text(samples[lab][name][v], samples[lab]["0"][v])
                              for lab, v in cols]])
    return table(header, rows)


# --------------------------------------------------------------------------- children

def set_hugepage(on: bool) -> bool:
    """numpy's madvise(MADV_HUGEPAGE) for new arrays >= 4 MiB; returns the previous flag."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _set_madvise_hugepage
    return bool(_set_madvise_hugepage(on))


def anon_hugepages_kb() -> int:
    """AnonHugePages of this process (kB), from /proc/self/smaps_rollup (0 if unreadable)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mode_layout(mode: str, r: int, fixed: tuple, current: tuple, rng) -> tuple:
    """The layout a mode uses in round ``r``: fixed, new every round, or every few."""
    if mode == "every round" or (mode == "every few" and r % REMAT_EVERY_FEW == 0):
        return measure.rematerialise(fixed, rng)
    return fixed if mode == "fixed" else current


def child_rounds(spec: dict) -> dict:
    """One process's rounds: every cell, mode and variant once per round, shuffled."""
    rng = np.random.default_rng(spec["seed"])
    mats = {c.label: materials(c) for c in CELLS}
    modes = spec["modes"]
    current = {(c.label, m): mats[c.label][:2] for c in CELLS for m in modes}
    out = {c.label: {m: {v: [] for v in c.variants} for m in modes} for c in CELLS}
    copy_ns = {c.label: [] for c in CELLS}
    for c in CELLS:
        warm(mats[c.label][2], mats[c.label][:2])
    keys = [(c.label, m, v) for c in CELLS for m in modes for v in c.variants]
    with measure.gc_paused():
        for r in range(spec["rounds"]):
            for (label, m), layout in current.items():
                start = time.thread_time_ns()
                current[label, m] = _mode_layout(m, r, mats[label][:2], layout, rng)
                if current[label, m] is not layout and m == "every round":
                    copy_ns[label].append(time.thread_time_ns() - start)
            for i in rng.permutation(len(keys)):
                label, m, v = keys[i]
                out[label][m][v].append(cpu_ns(mats[label][2][v], *current[label, m]))
    return {"samples": out, "copy_ns": copy_ns,
            "x_address": hex(mats[CELLS[0].label][0].X.ctypes.data)}


def child_main(spec: dict) -> None:
    """Entry of a child process: print one JSON line of samples and facts."""
    if spec.get("hugepage") is not None:
        set_hugepage(spec["hugepage"])
    with measure.set_threads(1):
        result = child_rounds(spec)
    result.update(pid=os.getpid(), anon_hugepages_kb=anon_hugepages_kb())
    print(json.dumps(result))


def spawn(spec: dict, aslr: bool = True) -> dict:
    """Run one child (under ``setarch -R`` when ``aslr`` is False) and parse its line."""
    prefix = [] if aslr else ["setarch", platform.machine(), "-R"]
    cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"child {cmd[:4]} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def medians(runs: list[dict], label: str, mode: str, variant: str) -> list[float]:
    """Per-process median (ms) of one cell variant in one mode."""
    return [float(np.median(r["samples"][label][mode][variant])) / NS_PER_MS for r in runs]


def ratios(runs: list[dict], cell: Cell, mode: str) -> list[float]:
    """Per-process paired ratio of the cell's first variant to its second."""
    a, b = cell.variants
    return [stats.paired_ratio(r["samples"][cell.label][mode][a],
                               r["samples"][cell.label][mode][b]) for r in runs]


def ratio_se(runs: list[dict], cell: Cell, mode: str) -> float:
    """Median over processes of the within-process standard error of the log ratio.

    From each process's 95% paired bootstrap interval: (log high - log low) / 3.92.
    A spread of per-process ratios (sd of log) no larger than this is sampling
    error alone; beyond it, processes differ.
    """
    a, b = cell.variants
    ses = []
    for r in runs:
        low, high = stats.bootstrap_ci_ratio(r["samples"][cell.label][mode][a],
                                             r["samples"][cell.label][mode][b], paired=True)
        ses.append((np.log(high) - np.log(low)) / (2 * 1.96))
    return float(np.median(ses))


# --------------------------------------------------------------------------- (b) huge pages

def hugepage_runs(plan: Plan) -> dict[bool, list[dict]]:
    """Processes alternating hugepage on / off, fixed layout."""
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for k in range(2 * plan.hugepage_procs):
        on = k % 2 == 0
        spec = {"seed": 100 + k, "modes": ["fixed"], "rounds": plan.proc_rounds,
                "hugepage": on}
        runs[on].append(spawn(spec))
    return runs


def hugepage_report(runs: dict[bool, list[dict]]) -> str:
    """Per condition: median of per-process medians and their range; off vs on."""
    header = ["cell variant", "hugepage on: ms (range)", "off: ms (range)", "off/on",
              "Mann-Whitney p"]
    rows = []
    for c in CELLS:
        for v in c.variants:
            on, off = (medians(runs[k], c.label, "fixed", v) for k in (True, False))
            rows.append([f"{c.label} {short(v)}",
                         f"{np.median(on):.3f} ({min(on):.3f}-{max(on):.3f})",
                         f"{np.median(off):.3f} ({min(off):.3f}-{max(off):.3f})",
                         pct(stats.ratio_of_medians(off, on)),
                         f"{stats.mann_whitney(off, on):.3f}"])
    kb = {k: [r["anon_hugepages_kb"] for r in runs[k]] for k in runs}
    return table(header, rows) + f"\nAnonHugePages kB per process: on {kb[True]}, off {kb[False]}"


# --------------------------------------------------------------------------- (c, e) processes

def aslr_runs(plan: Plan) -> dict[bool, list[dict]]:
    """Processes alternating ASLR on / off, fixed layout, all with the same seed.

    With ASLR off and one seed, every process makes the same allocations in the
    same order at the same virtual addresses: what still differs between them
    is physical placement, caches and the rest of the machine.
    """
    runs: dict[bool, list[dict]] = {True: [], False: []}
    spec = {"seed": 200, "modes": ["fixed"], "rounds": plan.proc_rounds}
    for k in range(2 * plan.proc_count):
        aslr = k % 2 == 0
        runs[aslr].append(spawn(spec, aslr=aslr))
    return runs


def remat_runs(plan: Plan) -> list[dict]:
    """Processes (ASLR on, own seeds) each interleaving the three layout modes."""
    modes = ["fixed", "every round", "every few"]
    return [spawn({"seed": 300 + k, "modes": modes, "rounds": plan.proc_rounds})
            for k in range(plan.proc_count)]


def aslr_report(runs: dict[bool, list[dict]]) -> str:
    """Fixed layout: spread across processes of medians and of the variants' ratio."""
    header = ["cell: quantity", "ASLR on: range across processes", "ASLR off (setarch -R)"]
    rows = []
    for c in CELLS:
        for v in c.variants:
            rows.append([f"{c.label} {short(v)} median ms",
                         *[Spread.of(medians(runs[k], c.label, "fixed", v)).text()
                           for k in (True, False)]])
        rows.append([f"{c.label} ratio {short(c.variants[0])} / {short(c.variants[1])}",
                     *[Spread.of(ratios(runs[k], c, "fixed")).text() for k in (True, False)]])
        rows.append(["  within-process SE of log ratio",
                     *[f"{ratio_se(runs[k], c, 'fixed') * 100:.1f}%" for k in (True, False)]])
    addresses = {k: len({r["x_address"] for r in runs[k]}) for k in runs}
    return table(header, rows) + (f"\ndistinct case.X addresses: ASLR on {addresses[True]} of "
                                  f"{len(runs[True])}, off {addresses[False]} of "
                                  f"{len(runs[False])}")


def remat_report(runs: list[dict]) -> str:
    """Per mode, spread across processes of the ratio and of medians; the copy's cost."""
    modes = ["fixed", "every round", "every few"]
    header = ["cell: quantity", *[m if m != "every few" else f"every {REMAT_EVERY_FEW}"
                                  for m in modes]]
    rows = []
    for c in CELLS:
        rows.append([f"{c.label} ratio {short(c.variants[0])} / {short(c.variants[1])}",
                     *[Spread.of(ratios(runs, c, m)).text() for m in modes]])
        rows.append(["  within-process SE of log ratio",
                     *[f"{ratio_se(runs, c, m) * 100:.1f}%" for m in modes]])
        for v in c.variants:
            rows.append([f"{c.label} {short(v)} median ms",
                         *[Spread.of(medians(runs, c.label, m, v)).text() for m in modes]])
            shift = [stats.ratio_of_medians(r["samples"][c.label]["every round"][v],
                                            r["samples"][c.label]["fixed"][v]) for r in runs]
            rows.append([f"  {short(v)}: every round / fixed, in-process",
                         "", Spread.of(shift).text(), ""])
        copy = [float(np.median(r["copy_ns"][c.label])) / NS_PER_MS for r in runs]
        rows.append([f"{c.label} rematerialise (case, cache) ms", "", Spread.of(copy).text(),
                     ""])
    return table(header, rows)


# --------------------------------------------------------------------------- (d) oversubscription

BUSY_CODE = {
    "spin": "while True: pass",
    "stream": (f"import numpy as np\na = np.ones({STREAM_BYTES // 16})\n"
               "b = np.empty_like(a)\nwhile True: np.copyto(b, a)"),
}
#: Phases of part (d): (name, busy loop or None, CPU it is pinned to).
PHASES = (("idle", None, None), ("spin, other CPU", "spin", 1),
          ("stream, other CPU", "stream", 1), ("spin, same CPU", "spin", 0))


@contextmanager
def busy(kind: str | None, cpu: int | None) -> Iterator[None]:
    """A busy-loop child pinned to ``cpu`` for the block; killed by its pid after."""
    if kind is None:
        yield
        return
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n" + BUSY_CODE[kind]
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(BUSY_START_S)
        yield
    finally:
        proc.kill()
        proc.wait()


def phase_samples(fns: list[tuple[Callable, tuple]], seconds: float) -> list[list[tuple]]:
    """(cpu_ns, wall_ns) samples of each ``(fn, layout)`` in turn for ``seconds``."""
    out: list[list[tuple]] = [[] for _ in fns]
    end = time.monotonic() + seconds
    with measure.gc_paused():
        while time.monotonic() < end:
            for i, (fn, layout) in enumerate(fns):
                wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
                fn(*layout)
                out[i].append((time.thread_time_ns() - cpu, time.perf_counter_ns() - wall))
    return out


def oversubscription_samples(plan: Plan) -> tuple[list[str], dict]:
    """Phases cycled ``plan.phase_cycles`` times, this thread pinned to CPU 0."""
    targets = []
    for c in (CELLS[0], CELLS[2]):
        case, cache, fns = materials(c)
        targets.append((f"{c.label} {short(c.variants[0])}", fns[c.variants[0]], (case, cache)))
    names = [t[0] for t in targets]
    got: dict = {p[0]: [[] for _ in targets] for p in PHASES}
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        for _ in range(plan.phase_cycles):
            for name, kind, cpu in PHASES:
                with busy(kind, cpu):
                    for i, s in enumerate(phase_samples([t[1:] for t in targets], plan.phase_s)):
                        got[name][i].extend(s)
    finally:
        os.sched_setaffinity(0, allowed)
    return names, got


def oversubscription_report(names: list[str], got: dict) -> str:
    """Per phase and target: CPU median vs idle, wall/CPU median, share descheduled."""
    header = ["phase", *[f"{n}: CPU vs idle | wall/CPU | >{DESCHEDULED}" for n in names]]
    rows = []
    for phase, per_target in got.items():
        cells = []
        for i, samples in enumerate(per_target):
            cpu = np.array([s[0] for s in samples], dtype=float)
            wall = np.array([s[1] for s in samples], dtype=float)
            idle = np.median([s[0] for s in got["idle"][i]])
            cells.append(f"{pct(np.median(cpu) / idle)} | {np.median(wall / cpu):.2f} | "
                         f"{np.mean(wall / cpu > DESCHEDULED) * 100:.0f}% of {cpu.size}")
        rows.append([phase, *cells])
    return table(header, rows)


# --------------------------------------------------------------------------- machine

def machine() -> str:
    """CPU, kernel, numpy SIMD, BLAS, THP and ASLR settings, relevant environment."""
    info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    cpu = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    get = {k.strip(): v.strip() for k, v in cpu.items()}
    from numpy._core._multiarray_umath import __cpu_features__

    simd = [k for k, v in __cpu_features__.items() if v and k.startswith(("AVX", "X86", "FMA"))]
    sysfs = {name: Path(path).read_text().strip() for name, path in (
        ("THP enabled", "/sys/kernel/mm/transparent_hugepage/enabled"),
        ("THP defrag", "/sys/kernel/mm/transparent_hugepage/defrag"),
        ("randomize_va_space", "/proc/sys/kernel/randomize_va_space"))}
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   *measure.MALLOC_ENV)}
    return "\n".join([
        f"date {datetime.datetime.now().isoformat(timespec='seconds')}, host "
        f"{platform.node()}, kernel {platform.release()}",
        f"CPU {get.get('model name')} (family {get.get('cpu family')}, model "
        f"{get.get('model')}, stepping {get.get('stepping')}), {os.cpu_count()} cores",
        f"python {platform.python_version()}, numpy {np.__version__}, SIMD {' '.join(simd)}",
        f"BLAS {measure.describe_blas(measure.numpy_blas(measure.blas_libraries()))}",
        "; ".join(f"{k}: {v}" for k, v in sysfs.items()),
        "; ".join(f"{k}={v}" for k, v in env.items())])


# --------------------------------------------------------------------------- driver

def run_part(title: str, compute: Callable[[], T], render: Callable[[T], str],
             rerun: bool) -> T:
    """Compute a part under :func:`watched`, print it; rerun once if others used more
    than LOAD_LIMIT cores, keeping the attempt with less load. Returns its data."""
    print(f"\n== {title}", flush=True)
    with watched() as load:
        data = compute()
    if rerun and load[0].other_cores > LOAD_LIMIT:
        print(f"(first attempt: {load[0].text()}; rerunning)", flush=True)
        with watched() as again:
            data2 = compute()
        print(f"(second attempt: {again[0].text()})", flush=True)
        if again[0].other_cores < load[0].other_cores:
            data, load = data2, again
    print(render(data))
    print(f"[{load[0].text()}]", flush=True)
    return data


def with_malloc_env() -> None:
    """Re-execute this script with the workers' malloc thresholds if they are not set."""
    if all(os.environ.get(k) == v for k, v in measure.MALLOC_ENV.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **measure.MALLOC_ENV})


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--parts", default="abcde", help="a subset of abcde")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse()
    with_malloc_env()
    if args.child:
        child_main(json.loads(args.child))
        return
    plan, rng = (QUICK if args.quick else FULL), np.random.default_rng(args.seed)
    rerun, t0 = not args.quick, time.monotonic()
    print(machine())
    print(f"plan {plan}")
    with measure.set_threads(1) as threads:
        print(f"BLAS threads in effect {threads.blas_threads}; load average {loadavg():.2f}")
        if "a" in args.parts:
            run_part("(a) alignment: change vs offset 0, paired, 95% CI",
                     lambda: alignment_samples(plan, rng), alignment_report, rerun)
        if "b" in args.parts:
            run_part("(b) huge pages: separate processes, per-process medians",
                     lambda: hugepage_runs(plan), hugepage_report, rerun)
        if "d" in args.parts:
            run_part("(d) oversubscription: this thread on CPU 0",
                     lambda: oversubscription_samples(plan),
                     lambda got: oversubscription_report(*got), rerun)
    if "c" in args.parts:
        run_part("(c) address-space layout: fixed layout, across processes",
                 lambda: aslr_runs(plan), aslr_report, rerun)
    if "e" in args.parts:
        run_part("(e) rematerialisation: layout modes interleaved in each process",
                 lambda: remat_runs(plan), remat_report, rerun)
    print(f"\ntotal {time.monotonic() - t0:.0f} s; load average {loadavg():.2f}")


if __name__ == "__main__":
    main()
