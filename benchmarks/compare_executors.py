"""Our executors side by side, and beside what users would run instead, on this machine.

    python benchmarks/compare_executors.py --out DIR            # full run (tens of minutes)
    python benchmarks/compare_executors.py --quick --out DIR    # under 5 minutes, no peers
    python benchmarks/compare_executors.py --quick --peers --out DIR
    python benchmarks/compare_executors.py --smoke --out DIR    # seconds: what the test runs

Workloads (benchmarks/peers/workloads.py holds their kernels, shared by every runner):
no-op replicates (2 no-op steps, 2 conditions, seeds on: overhead), a 20 ms CPU-bound step
(scaling), a NumPy step over a 50 MiB datasource (data movement), a 20 ms sleep (I/O-bound),
a cacheable 200 ms step shared by all replicates, and optimize (20 trials x 10 replicates).
Executors: serial, thread, process, asyncio, Ray local, Ray on a local multi-node cluster
(full mode only). Peers, each in its own virtual environment (``--peers`` creates missing ones
under ~/.cache/crystallize-bench; ``--peer-python NAME=PATH`` uses an existing one): upstream
crystallize-ml 0.27.0 (serial and its ParallelExecution), a plain joblib loop, Ray Tune (optimize).
Scaling: 10 to 1,000,000 replicates (1M in full mode only), each point in a fresh process:
time per replicate and the driver's peak RSS.

Every (runner, executor) pair runs in its own subprocess, in a temporary folder that is
removed afterwards; medians over repeats; Ray's start-up is timed apart. Writes
``results.md``, ``results.json`` and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
sys.path.insert(0, str(PEERS_DIR))

import workloads as wl  # noqa: E402

OUR_EXECUTORS = ("serial", "thread", "process", "asyncio", "ray", "ray-cluster")
DEFAULT_PEER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crystallize-bench"

MODES: dict[str, dict[str, Any]] = {
    "smoke": {
        "sizes": {"noop": 20, "cpu": 2, "numpy": 2, "numpy_mib": 1, "sleep": 2, "cached": 2},
        "optimize": (2, 2),
        "workloads": ["noop", "cpu"],
        "executors": ["serial"],
        "repeats": 1,
        "scaling": {"serial": [10, 100]},
        "timeout": 120,
    },
    "quick": {
        "sizes": {"noop": 2000, "cpu": 40, "numpy": 16, "numpy_mib": 50, "sleep": 40, "cached": 10},
        "optimize": (wl.OPTIMIZE_TRIALS, wl.OPTIMIZE_REPLICATES),
        "workloads": list(wl.WORKLOADS),
        "executors": ["serial", "thread", "process", "asyncio", "ray"],
        "repeats": 3,
        "scaling": {"serial": [10, 100, 1_000, 10_000, 100_000], "ray": [10, 1_000, 100_000]},
        "timeout": 600,
    },
    "full": {
        "sizes": {"noop": 10_000, "cpu": 200, "numpy": 100, "numpy_mib": 50, "sleep": 200, "cached": 20},
        "optimize": (wl.OPTIMIZE_TRIALS, wl.OPTIMIZE_REPLICATES),
        "workloads": list(wl.WORKLOADS),
        "executors": list(OUR_EXECUTORS),
        "repeats": 5,
        "scaling": {
            name: [10, 100, 1_000, 10_000, 100_000, 1_000_000]
            for name in ("serial", "thread", "process", "asyncio", "ray")
        },
        "timeout": 3600,
    },
}

# name -> what its virtual environment needs, the runner script, what it runs.
PEERS: dict[str, dict[str, Any]] = {
    "crystallize027": {
        "requirements": ["crystallize-ml==0.27.0", "numpy"],
        "script": "crystallize_runner.py",
        "executors": ["serial", "thread", "process"],
        "workloads": list(wl.WORKLOADS),
        "label": "0.27",
    },
    "joblib": {
        "requirements": ["joblib", "numpy"],
        "script": "joblib_runner.py",
        "executors": ["loky"],
        "workloads": list(wl.WORKLOADS),
        "label": "joblib",
    },
    "ray-tune": {
        "requirements": ["ray[tune]"],  # pinned to our Ray's version when it is installed
        "script": "ray_tune_runner.py",
        "executors": ["tune"],
        "workloads": ["optimize"],
        "label": "Ray Tune",
        "max_repeats": {"quick": 1, "full": 3},  # one fit() takes tens of seconds
    },
}
# Which of our executors a peer's configuration is compared with, kind for kind.
SAME_KIND = {"serial": "serial", "thread": "thread", "process": "process", "loky": "process", "tune": "ray"}

UNITS = {
    "noop": ("µs per replicate-condition", 1e6),
    "cpu": ("ms per replicate", 1e3),
    "numpy": ("ms per replicate", 1e3),
    "sleep": ("ms per replicate", 1e3),
    "cached": ("ms per replicate-condition", 1e3),
    "optimize": ("ms per trial", 1e3),
}
TITLES = {
    "noop": "no-op replicates: 2 no-op steps, 2 conditions, seeds on (overhead)",
    "cpu": "20 ms CPU-bound step, 1 condition (scaling over cores)",
    "numpy": "NumPy dot over a 50 MiB datasource array (data movement)",
    "sleep": "20 ms sleep step (I/O-bound)",
    "cached": "cacheable 200 ms step shared by all replicates, 2 conditions (fresh cache per run)",
    "optimize": "optimize: 20 trials x 10 replicates of the no-op pipeline",
}

# ---------------------------------------------------------------- running the runners


def runner_env(work: Path) -> dict[str, str]:
    """A clean environment: no inherited stores, Ray address or Python path; private temp dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYSTALLIZE_") and k not in ("RAY_ADDRESS",)}
    tmp, ray_tmp = work / "t", work / "r"
    (ray_tmp / "ray").mkdir(parents=True, exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env.update(
        PYTHONPATH=str(PEERS_DIR),
        TMPDIR=str(tmp),
        RAY_TMPDIR=str(ray_tmp),
        RAY_AUTH_MODE="token",
        PYTHONUNBUFFERED="1",
    )
    return env


def call_runner(python: str, script: str, spec: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """Run one runner in its own process; its ``RESULT`` line, or an error entry."""
    label = f"{spec['runner']}:{','.join(spec.get('executors', []))}"
    started = time.perf_counter()
    # Its own session, so a runner that hangs is stopped with everything it started (a Ray cluster).
    proc = subprocess.Popen(
        [python, str(PEERS_DIR / script), json.dumps(spec)],
        cwd=work,
        env=runner_env(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"errors": [{"runner": label, "error": f"timed out after {timeout:.0f} s"}]}
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = (stderr or stdout)[-1500:]
        return {"errors": [{"runner": label, "error": f"exit {proc.returncode}, no result", "trace": tail}]}
    payload: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    payload["wall_seconds"] = time.perf_counter() - started
    for error in payload.get("errors", []):
        error.setdefault("runner", label)
    return payload


def base_spec(mode: dict[str, Any], runner: str, work: Path, loops: int, repeats: int) -> dict[str, Any]:
    trials, per_trial = mode["optimize"]
    sizes = dict(mode["sizes"], optimize_trials=trials, optimize_replicates=per_trial)
    return {
        "runner": runner,
        "sizes": sizes,
        "repeats": dict.fromkeys(wl.WORKLOADS, repeats),
        "burn_loops": loops,
        "workdir": str(work / "runs"),
    }


def merge(into: dict[str, Any], payload: dict[str, Any], runner: str) -> None:
    into["measurements"].extend(payload.get("measurements", []))
    into["scaling"].extend(payload.get("scaling", []))
    into["errors"].extend(payload.get("errors", []))
    for executor, startup in payload.get("startup", {}).items():
        into["startup"].append({"runner": runner, "executor": executor, **startup})
    if payload.get("versions"):
        into["versions"][runner] = payload["versions"]


# ---------------------------------------------------------------- peers' environments


def peer_pythons(args: argparse.Namespace, log: Any) -> dict[str, str]:
    """The interpreter of each peer: ``--peer-python`` overrides, then the cache; ``--peers`` creates."""
    chosen: dict[str, str] = {}
    for item in args.peer_python or []:
        name, _, path = item.partition("=")
        if name not in PEERS or not path:
            raise SystemExit(f"--peer-python wants NAME=PATH with NAME one of {sorted(PEERS)}, got {item!r}")
        chosen[name] = path
    for name, peer in PEERS.items():
        if name in chosen:
            continue
        python = args.peer_cache / name / "bin" / "python"
        if not python.exists() and args.peers:
            create_peer_env(args.peer_cache / name, peer_requirements(peer), log)
        if python.exists():
            chosen[name] = str(python)
    return chosen


def peer_requirements(peer: dict[str, Any]) -> list[str]:
    requirements = list(peer["requirements"])
    if requirements == ["ray[tune]"]:
        try:
            import ray

            requirements = [f"ray[tune]=={ray.__version__}"]
        except ImportError:
            pass
    return requirements


def create_peer_env(folder: Path, requirements: list[str], log: Any) -> None:
    log(f"creating {folder} with {' '.join(requirements)} ...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(partial)], check=True)
    subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True)
    partial.rename(folder)  # only a complete environment gets the real name


# ---------------------------------------------------------------- derived numbers


def per_unit(m: dict[str, Any]) -> float:
    return float(m["seconds"]) / max(1, int(m["units"])) * UNITS[m["workload"]][1]


def column_of(m: dict[str, Any]) -> str:
    if m["runner"] == "ours":
        return str(m["executor"])
    label = PEERS.get(m["runner"], {}).get("label", m["runner"])
    return label if m["runner"] in ("joblib", "ray-tune") else f"{label} {m['executor']}"


def derive(results: dict[str, Any]) -> None:
    """Per-unit values, speed-ups, optimize overhead per trial, and the ratios ours vs peers."""
    ms = results["measurements"]
    by_key = {(m["runner"], m["executor"], m["workload"]): m for m in ms}
    for m in ms:
        m["per_unit"] = per_unit(m)
        m["column"] = column_of(m)
        serial = by_key.get((m["runner"], "serial", m["workload"]))
        if m["workload"] == "cpu" and serial:
            m["speedup_vs_serial"] = serial["seconds"] / m["seconds"]
        if m["workload"] == "cached":
            # Run time in units of the expensive step: about 1 when it is computed once and shared.
            m["expensive_step_multiples"] = m["seconds"] / (wl.EXPENSIVE_MULTIPLE * 0.02)
        if m["workload"] == "optimize":
            noop = by_key.get((m["runner"], m["executor"], "noop"))
            # 0.27 runs the baseline beside the asked treatment in every trial.
            conditions = 2 if m["runner"] == "crystallize027" else 1
            m["replicate_conditions_per_trial"] = conditions * int(m.get("replicates_per_trial", 0))
            if noop:
                replicate_seconds = noop["seconds"] / noop["units"]
                trial = m["seconds"] / m["units"]
                m["overhead_ms_per_trial"] = (trial - m["replicate_conditions_per_trial"] * replicate_seconds) * 1e3
    ratios = []
    ours = {(m["executor"], m["workload"]): m for m in ms if m["runner"] == "ours"}
    for m in ms:
        if m["runner"] == "ours":
            continue
        mine = [o for (ex, w), o in ours.items() if w == m["workload"]]
        if not mine:
            continue
        best = min(mine, key=lambda o: o["seconds"])
        same = ours.get((SAME_KIND.get(m["executor"], ""), m["workload"]))
        ratios.append(
            {
                "workload": m["workload"],
                "peer": m["column"],
                "peer_seconds": m["seconds"],
                "same_kind": same["executor"] if same else None,
                "same_kind_seconds": same["seconds"] if same else None,
                "ratio_same_kind": m["seconds"] / same["seconds"] if same else None,
                "best_ours": best["executor"],
                "best_ours_seconds": best["seconds"],
                "ratio_best": m["seconds"] / best["seconds"],
            }
        )
    results["ratios"] = sorted(ratios, key=lambda r: wl.WORKLOADS.index(r["workload"]))


# ---------------------------------------------------------------- reports


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits - 1}f}" if magnitude >= 1 else f"{value:.{digits}g}"


def footer(results: dict[str, Any]) -> str:
    machine = results["machine"]
    v = results["versions"].get("ours", {})
    return (
        f"{machine['date']} · {machine['cpus']} CPUs ({machine['machine']}, {machine['system']}) · "
        f"python {machine['python']} · crystallize {v.get('crystallize', '?')} · ray {v.get('ray', '-')} · "
        f"numpy {v.get('numpy', '-')} · load {machine['load_start']}→{machine['load_end']}\n"
        f"{results['command']}"
    )


def markdown(results: dict[str, Any]) -> str:
    ms = results["measurements"]
    columns = [c for c in OUR_EXECUTORS if any(m["column"] == c for m in ms)]
    columns += [c for c in dict.fromkeys(m["column"] for m in ms) if c not in columns]  # peers in run order
    lines = [
        f"# Executor comparison ({results['mode']} mode)",
        "",
        f"Measured on this machine: {results['machine']['cpus']} CPUs, {results['machine']['platform']}, "
        f"{results['machine']['date']}; load average {results['machine']['load_start']} at start, "
        f"{results['machine']['load_end']} at the end.",
        f"Versions: {json.dumps(results['versions'])}",
        "",
        f"Reproduce: `{results['command']}`",
        "",
        f"Medians over {results['repeats']} repeats; every run in a fresh folder (fresh store and cache). "
        "Ray's start-up is timed apart (below) and not in the workload times.",
        "",
        "## Workloads",
        "",
        "| workload | unit | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for workload in wl.WORKLOADS:
        row = {m["column"]: m for m in ms if m["workload"] == workload}
        if not row:
            continue
        cells = []
        for column in columns:
            m = row.get(column)
            if m is None:
                cells.append("-")
            elif workload == "cpu" and "speedup_vs_serial" in m:
                cells.append(f"{fmt(m['per_unit'])} ({m['speedup_vs_serial']:.2f}x)")
            elif workload == "cached":
                cells.append(f"{fmt(m['per_unit'])} ({m['expensive_step_multiples']:.1f}x)")
            elif workload == "optimize" and "overhead_ms_per_trial" in m:
                cells.append(f"{fmt(m['per_unit'])} (+{fmt(m['overhead_ms_per_trial'])})")
            else:
                cells.append(fmt(m["per_unit"]))
        lines.append(f"| {workload} | {UNITS[workload][0]} | " + " | ".join(cells) + " |")
    lines += ["", "What each row runs:", ""]
    lines += [f"- **{w}**: {TITLES[w]}" for w in wl.WORKLOADS if any(m["workload"] == w for m in ms)]
    lines += [
        "- cpu cells show the speed-up over the same runner's serial time in brackets; cached cells the "
        "whole run's time in multiples of one expensive step (about 1x: computed once and shared); optimize cells the "
        "time per trial on top of its replicates (trial time minus its replicate-conditions at the same "
        "executor's no-op cost; 0.27 also reruns the baseline every trial).",
        "",
    ]
    if results["ratios"]:
        lines += [
            "## Ours vs each peer",
            "",
            "Ratio = peer time / our time for the same workload (above 1: we are faster).",
            "",
            "| workload | peer | peer s | ours, same kind | ratio | ours, best | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["ratios"]:
            same = f"{r['same_kind']} {fmt(r['same_kind_seconds'])} s" if r["same_kind"] else "-"
            lines.append(
                f"| {r['workload']} | {r['peer']} | {fmt(r['peer_seconds'])} | {same} | {fmt(r['ratio_same_kind'])} "
                f"| {r['best_ours']} {fmt(r['best_ours_seconds'])} s | {fmt(r['ratio_best'])} |"
            )
        lines.append("")
    lines += targets(results)
    if results["startup"]:
        lines += ["## Start-up (not in the times above)", "", "| runner | executor | first run s | cluster start s |"]
        lines.append("|---|---|---|---|")
        for s in results["startup"]:
            cluster = fmt(s.get("cluster_seconds")) if s.get("cluster_seconds") else "-"
            lines.append(f"| {s['runner']} | {s['executor']} | {fmt(s['first_run_seconds'])} | {cluster} |")
        lines += [
            "",
            "First run: a 4-replicate no-op run (imports, pools; for Ray its start-up and first workers; "
            "for Ray Tune `ray.init`).",
            "",
        ]
    if results["scaling"]:
        lines += [
            "## Scaling (no-op replicates, 1 condition, each point in a fresh process)",
            "",
            "| executor | replicates | seconds | µs per replicate | driver peak RSS MiB | RSS after start-up MiB |",
            "|---|---|---|---|---|---|",
        ]
        for p in sorted(results["scaling"], key=lambda p: (p["executor"], p["replicates"])):
            lines.append(
                f"| {p['executor']} | {p['replicates']:,} | {fmt(p['seconds'])} | {fmt(p['per_replicate_us'])} "
                f"| {p['peak_rss_mib']:.0f} | {p['base_rss_mib']:.0f} |"
            )
        lines.append("")
    if results["plots"]:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in results["plots"]] + [""]
    if results["errors"] or results["skipped"]:
        lines += ["## Not measured", ""]
        lines += [f"- {s}" for s in results["skipped"]]
        for e in results["errors"]:
            where = " ".join(str(e[k]) for k in ("runner", "executor", "workload") if e.get(k))
            lines.append(f"- {where}: {e['error']}")
        lines.append("")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's hot-path figures, where this run measured them."""
    ms = {(m["runner"], m["executor"], m["workload"]): m for m in results["measurements"]}
    lines = ["## Hot-path figures", ""]
    ours_noop, old_noop = ms.get(("ours", "serial", "noop")), ms.get(("crystallize027", "serial", "noop"))
    if ours_noop:
        text = f"- serial no-op: {fmt(ours_noop['per_unit'])} µs per replicate-condition"
        if old_noop:
            text += f"; 0.27: {fmt(old_noop['per_unit'])} µs, {old_noop['seconds'] / ours_noop['seconds']:.1f}x"
        lines.append(text + " (target: at least 8x faster than 0.27)")
    overheads = [
        f"{m['executor']} {fmt(m['overhead_ms_per_trial'])}"
        for (runner, _, w), m in ms.items()
        if runner == "ours" and w == "optimize" and "overhead_ms_per_trial" in m
    ]
    if overheads:
        lines.append(f"- optimize, ms per trial on top of its replicates: {', '.join(overheads)} (target ≤ 10 ms)")
    biggest: dict[str, dict[str, Any]] = {}
    for p in results["scaling"]:
        if p["replicates"] >= biggest.get(p["executor"], {"replicates": 0})["replicates"]:
            biggest[p["executor"]] = p
    if biggest:
        parts = [f"{e} {p['peak_rss_mib']:.0f} MiB at {p['replicates']:,}" for e, p in sorted(biggest.items())]
        lines.append(f"- driver peak memory at the largest point: {', '.join(parts)} (target: 1M under 2 GiB)")
    return [*lines, ""] if len(lines) > 2 else []


def plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results["skipped"].append("plots: matplotlib is not installed")
        return []
    made = []
    note = footer(results)
    ms = results["measurements"]
    present = [w for w in wl.WORKLOADS if any(m["workload"] == w for m in ms)]
    if present:
        cols = min(3, len(present))
        rows = (len(present) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows + 0.9), squeeze=False)
        for ax, workload in zip(axes.flat, present, strict=False):
            row = [m for m in ms if m["workload"] == workload]
            labels = [m["column"] for m in row]
            colours = ["tab:blue" if m["runner"] == "ours" else "tab:orange" for m in row]
            ax.bar(range(len(row)), [m["per_unit"] for m in row], color=colours)
            ax.set_xticks(range(len(row)), labels, rotation=35, ha="right", fontsize=8)
            ax.set_title(workload, fontsize=10)
            ax.set_ylabel(UNITS[workload][0], fontsize=8)
            values = [m["per_unit"] for m in row if m["per_unit"] > 0]
            if values and max(values) / min(values) > 20:  # a linear axis would hide the small bars
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(present) :]:
            ax.axis("off")
        fig.suptitle("Median time per unit of work (blue: ours, orange: peers; lower is better)", fontsize=11)
        fig.text(0.01, 0.005, note, fontsize=7, family="monospace", va="bottom")
        fig.tight_layout(rect=(0, 0.07, 1, 0.96))
        fig.savefig(out / "workloads.png", dpi=110)
        plt.close(fig)
        made.append("workloads.png")
    if results["scaling"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
        for executor in sorted({p["executor"] for p in results["scaling"]}):
            points = sorted((p for p in results["scaling"] if p["executor"] == executor), key=lambda p: p["replicates"])
            xs = [p["replicates"] for p in points]
            left.plot(xs, [p["per_replicate_us"] for p in points], marker="o", label=executor)
            right.plot(xs, [p["peak_rss_mib"] for p in points], marker="o", label=executor)
        for ax, label in ((left, "µs per replicate"), (right, "driver peak RSS (MiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("replicates (no-op, 1 condition)")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("Scaling: time per replicate and driver memory as the work grows", fontsize=11)
        fig.text(0.01, 0.005, note, fontsize=7, family="monospace", va="bottom")
        fig.tight_layout(rect=(0, 0.09, 1, 0.95))
        fig.savefig(out / "scaling.png", dpi=110)
        plt.close(fig)
        made.append("scaling.png")
    return made


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, no multi-node, no 1M (under 5 minutes)")
    size.add_argument("--smoke", action="store_true", help="two tiny workloads on serial, seconds (the test)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md, results.json and plots")
    parser.add_argument("--peers", action="store_true", help="run the peers, creating missing environments")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers (full mode runs those installed)")
    parser.add_argument(
        "--peer-python",
        action="append",
        metavar="NAME=PATH",
        help=f"use this interpreter for a peer ({', '.join(PEERS)}); repeatable",
    )
    parser.add_argument("--peer-cache", type=Path, default=DEFAULT_PEER_CACHE, help="where --peers puts its venvs")
    parser.add_argument("--executors", help=f"comma list of ours to run (from {', '.join(OUR_EXECUTORS)})")
    parser.add_argument("--workloads", help=f"comma list (from {', '.join(wl.WORKLOADS)})")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (median reported)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling curve")
    parser.add_argument("--max-replicates", type=int, help="largest scaling point to run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = MODES[mode_name]
    workloads = args.workloads.split(",") if args.workloads else list(mode["workloads"])
    executors = args.executors.split(",") if args.executors else list(mode["executors"])
    unknown = (set(workloads) - set(wl.WORKLOADS)) | (set(executors) - set(OUR_EXECUTORS))
    if unknown:
        raise SystemExit(f"unknown workload or executor: {sorted(unknown)}")
    repeats = args.repeats or mode["repeats"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    command = shlex.join(["python", "benchmarks/compare_executors.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": mode_name,
        "command": command,
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "system": platform.system(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        "measurements": [],
        "scaling": [],
        "startup": [],
        "errors": [],
        "skipped": [],
        "versions": {},
        "plots": [],
    }
    use_peers = not args.no_peers and (args.peers or bool(args.peer_python) or mode_name == "full")
    pythons = peer_pythons(args, log) if use_peers else {}
    if use_peers:
        for name in PEERS:
            if name not in pythons:
                results["skipped"].append(f"peer {name}: no environment (--peers creates it)")
    loops = wl.calibrate_burn()
    results["burn_loops"] = loops
    log(f"{mode_name} mode: {len(workloads)} workloads x {executors}; peers {sorted(pythons) or 'none'}")
    with tempfile.TemporaryDirectory(prefix="cxb-", dir="/tmp") as tmp:
        work = Path(tmp)
        for executor in executors:
            spec = base_spec(mode, "ours", work, loops, repeats)
            spec.update(executors=[executor], workloads=workloads)
            log(f"ours on {executor} ...")
            merge(results, call_runner(sys.executable, "crystallize_runner.py", spec, work, mode["timeout"]), "ours")
        for name, python in pythons.items():
            peer = PEERS[name]
            wanted = [w for w in workloads if w in peer["workloads"]]
            if not wanted:
                continue
            for executor in peer["executors"]:
                peer_repeats = min(repeats, peer.get("max_repeats", {}).get(mode_name, repeats))
                spec = base_spec(mode, name, work, loops, peer_repeats)
                spec.update(executors=[executor], workloads=wanted)
                log(f"peer {name} ({executor}) ...")
                merge(results, call_runner(python, peer["script"], spec, work, mode["timeout"]), name)
        if not args.no_scaling:
            for executor, points in mode["scaling"].items():
                if args.executors and executor not in executors:
                    continue
                for replicates in points:
                    if args.max_replicates and replicates > args.max_replicates:
                        continue
                    spec = base_spec(mode, "ours", work, loops, 1)
                    spec["sizes"]["scale"] = replicates
                    spec.update(executors=[executor], workloads=["scale"])
                    log(f"scaling: {executor} x {replicates:,} ...")
                    payload = call_runner(sys.executable, "crystallize_runner.py", spec, work, mode["timeout"])
                    merge(results, payload, "ours")
    results["machine"]["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    results["elapsed_seconds"] = time.perf_counter() - started
    derive(results)
    results["plots"] = plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    log(f"done in {results['elapsed_seconds']:.0f} s: {out / 'results.md'}")
    for e in results["errors"]:
        log(f"not measured: {e.get('runner', '')} {e.get('workload', '')}: {e['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
