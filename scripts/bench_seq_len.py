"""Does a decode step grow with the context the cache could hold, or only with what is filled?

    python scripts/bench_seq_len.py [--factor 16] [--repeats 7]

dense16-tiny as shipped (seq_len 64) and a copy of its TOML file with seq_len raised `factor`
times, each run with prompt 16 and 16 new tokens by the reference, TP8xPP2 and layer-wise on
16 simulated CPU devices, repeats interleaved. Prints each method's decode TPOT (median, min,
max) for both files and the ratio: attention that reads only the filled positions keeps it
near 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxpart.runtime.sharding import ensure_cpu_devices  # noqa: E402

ensure_cpu_devices(16)

from jaxpart.config import RunShape, load_mesh, load_model, resolve  # noqa: E402
from jaxpart.measure.bench import measure_interleaved, measured_on, rates  # noqa: E402
from jaxpart.model.decoder import init_params  # noqa: E402
from jaxpart.planning.placement import METHODS  # noqa: E402
from jaxpart.runtime.engine import make_executor, random_prompts  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factor", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    shipped = resolve("dense16-tiny", "models")
    text = shipped.read_text()
    base = load_model(str(shipped))
    with tempfile.TemporaryDirectory() as tmp:
        long_path = Path(tmp) / "dense16-tiny-long.toml"
        long_seq = base.seq_len * args.factor
        long_path.write_text(text.replace(f"seq_len = {base.seq_len}", f"seq_len = {long_seq}"))
        configs = {"default": base, "long": load_model(str(long_path))}
    assert configs["long"].seq_len == long_seq, "the TOML copy did not take the new seq_len"
    mesh = load_mesh("cpu16")
    shape = RunShape(batch=16, prompt_len=16, gen_len=16)
    prompts = random_prompts(base, shape, 0)
    params = init_params(base, 0)  # seq_len shapes no weight: the same weights serve both
    runners = {}
    for label, cfg in configs.items():
        for method in METHODS:
            ex = make_executor(method, cfg, mesh, shape)
            placed = ex.place(params)
            runners[label, method] = lambda ex=ex, placed=placed: ex.timed_generate(placed, prompts)
    timed, _, compiles = measure_interleaved(runners, args.repeats)
    print(
        f"decode TPOT, prompt 16 + 16 new tokens, batch 16, measured on {measured_on(16)}; "
        f"seq_len {base.seq_len} vs {long_seq} ({args.repeats} interleaved repeats, "
        f"{compiles} compilations while timing)"
    )
    for method in METHODS:
        tpot = {label: rates(timed[label, method])["tpot_ms"] for label in configs}
        med = {label: statistics.median(v) for label, v in tpot.items()}
        print(
            f"  {method:10} seq_len {base.seq_len}: {med['default']:.3f} ms "
            f"({min(tpot['default']):.3f}-{max(tpot['default']):.3f}); seq_len {long_seq}: "
            f"{med['long']:.3f} ms ({min(tpot['long']):.3f}-{max(tpot['long']):.3f}); "
            f"ratio {med['long'] / med['default']:.2f}x"
        )


if __name__ == "__main__":
    main()
