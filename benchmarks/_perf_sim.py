"""One `simulations.run.simulate` run in a process of its own, with the server's round boundaries timed.

Run by benchmarks/performance.py (section 6). Flower's strategy logs "[ROUND k/N]" when a round starts,
"Global evaluation" when the server's central evaluation of that round starts and "Strategy execution
finished" at the end; a logging handler on the driver's `flwr` logger (where the ServerApp runs)
timestamps those lines. Nothing in Flower or fedrec is changed. Writes a JSON file of the timings.

    python -m benchmarks._perf_sim OUT_DIR RESULT.json --clients 5 --catalogue C --events E
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

MARKS = (
    "Initial global evaluation",
    "[ROUND ",
    "Aggregated MetricRecord",
    "Global evaluation",
    "Strategy execution",
)


class Stamps(logging.Handler):
    """Records (time, message) of the strategy's round-boundary log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if any(mark in text for mark in MARKS):
            self.events.append((record.created, text[:80]))


def round_timings(events: list[tuple[float, str]], num_rounds: int) -> list[dict[str, float]]:
    """Per round: whole round, client training (+ FedAvg), client evaluation and central evaluation, in s."""
    starts = [t for t, text in events if text.startswith("[ROUND ")]
    ends = starts[1:] + [t for t, text in events if text.startswith("Strategy execution")]
    out = []
    for k, (start, end) in enumerate(zip(starts, ends, strict=False), start=1):
        inside = [(t, text) for t, text in events if start <= t <= end]
        aggregated = [t for t, text in inside if "Aggregated MetricRecord" in text and "└" in text]
        central = [t for t, text in inside if text.startswith("Global evaluation")]
        row = {"round": k, "round_s": end - start}
        if aggregated:
            row["train_s"] = aggregated[0] - start
        if central:
            row["central_eval_s"] = end - central[0]
            if aggregated:
                row["client_eval_s"] = central[0] - aggregated[0]
        out.append(row)
    return out[:num_rounds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("result")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--catalogue", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    from simulations.run import simulate

    stamps = Stamps()
    logging.getLogger("flwr").addHandler(stamps)
    started = time.time()
    summary = simulate(
        args.out,
        num_clients=args.clients,
        catalogue=args.catalogue,
        events=args.events,
        overrides={
            "num-server-rounds": args.rounds,
            "local-steps": args.local_steps,
            "batch-size": args.batch_size,
        },
    )
    wall = time.time() - started
    first = stamps.events[0][0] if stamps.events else None
    result = {
        "clients": args.clients,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "batch_size": args.batch_size,
        "users_per_client": summary["data"]["users_per_client"],
        "wall_s": wall,
        "before_strategy_s": (first - started) if first else None,
        "per_round": round_timings(stamps.events, args.rounds),
        "events": stamps.events,
    }
    Path(args.result).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
