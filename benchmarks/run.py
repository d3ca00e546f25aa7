"""Run every benchmark and print one summary: ``python benchmarks/run.py [--quick] [--markdown FILE]``.

``--quick``: stores of 1k and 10k sessions, shorter timings (a few minutes on 2 cores). Without it, also 100k
sessions (~10 GB of RAM for the operations benchmark; 15-25 minutes). Each script runs in its own process (so
one script's heap does not slow the next) and can be run alone: ``python benchmarks/ops.py --quick``.
``benchmarks/flush.py`` (S3 flush cost, moto in a subprocess) runs last if present: ``--full`` when not quick.
``agent_turns.py`` runs 1k and 10k here; its 100k row needs ``python benchmarks/agent_turns.py --full`` (~8 GB).
``--only ops,memory`` runs a subset. ``--markdown FILE`` writes the summary tables as Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import Row, machine, print_rows  # noqa: E402

SCRIPTS = ("ops", "sync_facade", "agno_path", "agent_turns", "concurrency", "memory", "load", "flush")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k sessions only, shorter timings")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    parser.add_argument("--markdown", help="write the summary tables to this file")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SCRIPTS)
    began = time.perf_counter()
    header = machine()
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            script = HERE / f"{name}.py"
            if not script.exists():
                print(f"(skipping {name}: {script.name} not found)")
                continue
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, str(script), "--json", str(out)]
            if name == "flush":
                cmd += [] if args.quick else ["--full"]
            elif args.quick:
                cmd.append("--quick")
            print(f"\n=== {' '.join(cmd[1:2] + cmd[2:])}", flush=True)
            started = time.perf_counter()
            code = subprocess.call(cmd, cwd=HERE)
            print(f"=== {name}: exit {code}, {time.perf_counter() - started:.0f} s", flush=True)
            if out.exists():
                reports.append(json.loads(out.read_text()))
            else:
                reports.append({"title": f"{name}: failed (exit {code})", "rows": [], "notes": []})
    lines = [f"{header}; total {time.perf_counter() - began:.0f} s", ""]
    failed = []
    for rep in reports:
        rows = [Row(**row) for row in rep["rows"]]
        failed += [f"{r.op} [{r.size}] vs {r.ref_name}" for r in rows if r.passed is False]
        lines.append(f"## {rep['title']}")
        lines.append("")
        lines.extend(_markdown(rows))
        lines.extend(f"- {note}" for note in rep.get("notes", []))
        lines.append("")
    checked = sum(1 for rep in reports for row in rep["rows"] if row.get("passed") is not None)
    lines.append(f"**{checked - len(failed)} of {checked} targets met.**" + (" Missed:" if failed else ""))
    lines.extend(f"- {f}" for f in failed)
    text = "\n".join(lines)
    print("\n" + "=" * 100 + "\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


def _markdown(rows: list[Row]) -> list[str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_rows(rows, header=True, markdown=True)
    return buf.getvalue().splitlines()


if __name__ == "__main__":
    main()
