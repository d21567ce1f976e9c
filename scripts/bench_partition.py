"""Time the greedy and balanced partitioners on 10^5 layers (target: under 1 s each).

    python scripts/bench_partition.py [--layers 100000] [--repeats 5]

Prints the median wall time of each on this machine's CPU. Not a test: timings vary by machine.
"""

import argparse
import random
import statistics
import time

from jaxpart.planning.partition import bottleneck, plan_balanced, plan_greedy


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    # Layer sizes like real ones: hundreds of MB, varying by up to 4x.
    layer_bytes = [rng.randint(100_000_000, 400_000_000) for _ in range(args.layers)]
    capacity = 50 * max(layer_bytes)
    total = sum(layer_bytes)
    print(f"{args.layers:,} layers, {total / 1e12:.1f} TB in all; median of {args.repeats} runs")
    for name, fn in [
        (
            f"greedy   (capacity {capacity / 1e9:.1f} GB)",
            lambda: plan_greedy(layer_bytes, capacity),
        ),
        ("balanced (16 stages)", lambda: plan_balanced(layer_bytes, 16)),
        ("balanced (1,000 stages)", lambda: plan_balanced(layer_bytes, 1000)),
        (
            f"balanced ({args.layers // 2:,} stages)",
            lambda: plan_balanced(layer_bytes, args.layers // 2),
        ),
    ]:
        seconds = median_seconds(fn, args.repeats)
        stages = fn()
        print(
            f"  {name:<36} {seconds * 1e3:8.1f} ms  ({len(stages):,} stages, "
            f"bottleneck {bottleneck(stages, layer_bytes) / 1e9:.2f} GB)"
        )


if __name__ == "__main__":
    main()
