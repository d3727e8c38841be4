"""One real client training round in a process of its own, so that its peak RSS is the client's alone.

Run by benchmarks/performance.py (section 5, and the reply size of section 4): it calls the ClientApp's
`train` (client/app.py) with a Flower Message carrying the initial global adapter, exactly as a
SuperNode would, and prints one JSON line: peak RSS (ru_maxrss and /proc VmHWM) before and after the
round, the round's wall
time and the bytes of the reply as Flower would send them (its deflated object tree).

    python -m benchmarks._perf_client RUN_DIR CATALOGUE ADAPTER.safetensors --local-steps 15 [--non-private]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def wire_bytes(obj) -> int:
    """Bytes of a Flower object as transported: its unique deflated objects (chunks are deduplicated)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM), which exec resets; ru_maxrss may carry the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("catalogue")
    parser.add_argument("adapter")
    parser.add_argument("--local-steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--non-private", action="store_true")
    args = parser.parse_args(argv)

    from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
    from safetensors.torch import load_file

    from client.app import train
    from shared.adapters import to_record
    from shared.config import RunConfig

    cfg = RunConfig.from_flower(
        {
            "run-dir": args.run_dir,
            "catalogue": args.catalogue,
            "local-steps": args.local_steps,
            "batch-size": args.batch_size,
            "private": not args.non_private,
            # federation mode (the default): the federation's declared total only scales the share;
            # a public bound far above any partition here
            "federation-population": 1_000_000,
        }
    )
    arrays = to_record(load_file(args.adapter))
    metadata = Metadata(
        run_id=1,
        message_id="benchmark-train-1",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type="train",
    )
    message = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}), metadata=metadata
    )
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config=cfg.to_flower(),
    )
    before_kb, before_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak_rss_mb()
    started = time.perf_counter()
    reply = train(message, context, {})
    round_s = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if reply.has_error():
        raise SystemExit(f"the client refused to train: {reply.error.reason}")
    sent = reply.content["arrays"]
    result = {
        "private": cfg.private,
        "local_steps": cfg.local_steps,
        "batch_size": cfg.batch_size,
        "round_s": round_s,
        "ru_maxrss_before_round_mb": before_kb / 1024,
        "ru_maxrss_mb": peak_kb / 1024,
        "vmhwm_before_round_mb": before_hwm,
        "vmhwm_mb": peak_rss_mb(),
        "instruction_bytes": wire_bytes(message),
        "reply_bytes": wire_bytes(reply),
        "reply_arrays_bytes": wire_bytes(sent),
        "reply_arrays_payload_bytes": sum(a.numpy().nbytes for a in sent.values()),
        "reply_arrays": {name: list(a.shape) for name, a in sent.items()},
    }
    sys.stdout.write("PERF-RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
