"""Test driver for nix/pkgs/runner-fleet-scaler.py: loads it as a module and answers one
JSON request per stdin line with one JSON line, so vitest and fast-check reach its pure
functions and a ConsoleTail on real files without a process per case."""

import base64
import importlib.util
import json
import sys

spec = importlib.util.spec_from_file_location("scaler", sys.argv[1])
scaler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scaler)
tails = {}


def feed(chunks):
    """Runner state and events after base64 chunks, split however the caller split them."""
    partial, state, events = b"", scaler.BOOTING, []
    for chunk in chunks:
        lines, partial = scaler.split_lines(partial, base64.b64decode(chunk))
        for line in lines:
            event = scaler.parse_console_line(line.decode("utf-8", "replace"))
            if event:
                events.append(event)
            state = scaler.next_state(state, event)
    return {"state": state, "events": events}


def limits(text):
    try:
        return {k: list(v) for k, v in scaler.pool_limits(text).items()}
    except scaler.PoolsError as e:
        return {"error": str(e)}


def tail_poll(path):
    tail = tails.get(path) or tails.setdefault(path, scaler.ConsoleTail(path))
    tail.poll()
    return {"state": tail.state, "offset": tail.offset}


OPS = {
    "parse": lambda r: [scaler.parse_console_line(line) for line in r["lines"]],
    "decide": lambda r: [list(scaler.decide(*case)) for case in r["cases"]],
    "feed": lambda r: feed(r["chunks"]),
    "limits": lambda r: limits(r["text"]),
    "metrics": lambda r: scaler.render_metrics(r["pools"], r["up"]),
    "tail": lambda r: tail_poll(r["path"]),
}

for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps(OPS[request["op"]](request)), flush=True)
