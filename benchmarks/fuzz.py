"""Long fuzz run: the properties of tests/test_fuzz.py with many more (random, not derandomised)
hypothesis examples. Each target either holds for every example or reports its shrunk failing
input. Prints a Markdown table (examples run, failures, seconds) and optionally writes JSON.

    python benchmarks/fuzz.py --examples 20000 --image-examples 3000 --out docs/results/fuzz.json

Property per target: ``read_idx`` returns an array that re-encodes to exactly the input, or raises
DataError (one line, naming the file); ``preprocess`` returns a 28x28 uint8 digit or raises
ImageError (one line). Any other exception, or a malformed result, is a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from tests.test_fuzz import (  # noqa: E402
    _gzip_maybe_damaged,
    check_preprocess,
    check_read_idx,
    idx_inputs,
    image_arrays,
    image_bytes,
)


def _targets() -> dict[str, tuple[st.SearchStrategy, Callable[[Any], None], str]]:
    """name -> (strategy, check, which example budget: idx or image)."""
    any_shape = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=8))
    return {
        "read_idx: raw bytes (arbitrary + IDX-like)": (idx_inputs(), lambda c: check_read_idx(c[0], "raw.idx"), "idx"),
        "read_idx: gzipped, maybe truncated": (
            st.tuples(idx_inputs(), st.one_of(st.none(), st.integers(0, 10_000))),
            lambda c: check_read_idx(_gzip_maybe_damaged(c[0][0], c[1]), "file.gz"), "idx"),
        "read_idx: arbitrary bytes named .gz": (st.binary(max_size=2000), lambda b: check_read_idx(b, "n.gz"), "idx"),
        "preprocess: arbitrary arrays": (image_arrays(), check_preprocess, "image"),
        "preprocess: arrays incl. zero-size": (any_shape, check_preprocess, "image"),
        "preprocess: encoded images, maybe damaged": (image_bytes(), check_preprocess, "image"),
    }


def run_target(strategy: st.SearchStrategy, check: Callable[[Any], None], examples: int) -> dict[str, Any]:
    count = {"n": 0}

    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(strategy)
    def prop(case: Any) -> None:
        count["n"] += 1
        count["last"] = case  # after shrinking, hypothesis replays the minimal failing example last
        check(case)

    t = time.perf_counter()
    failure = None
    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - a failing property: record it, go on with the next target
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''} " \
                  f"(at {Path(tb.filename).name}:{tb.lineno})"
    out = {"examples": count["n"], "failure": failure, "seconds": round(time.perf_counter() - t, 1)}
    if failure:
        with np.printoptions(threshold=2000, linewidth=200):
            out["example"] = repr(count.get("last"))[:4000]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000, help="examples per read_idx target")
    ap.add_argument("--image-examples", type=int, default=3000, help="examples per preprocess target")
    ap.add_argument("--only", help="run only targets whose name contains this")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # numpy/PIL warnings on garbage input are expected, not failures
    results = {}
    print("| target | examples | failures | seconds |\n| --- | ---: | --- | ---: |", flush=True)
    for name, (strategy, check, budget) in _targets().items():
        if args.only and args.only not in name:
            continue
        r = run_target(strategy, check, args.examples if budget == "idx" else args.image_examples)
        results[name] = r
        print(f"| {name} | {r['examples']:,} | {r['failure'] or '0'} | {r['seconds']} |", flush=True)
        if r["failure"]:
            print(f"<!-- minimal failing example: {r['example']} -->", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
