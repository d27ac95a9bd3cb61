"""STAND-IN for one fireactions microVM running an ephemeral actions/runner (`run.sh --jitconfig`).

Reads its JIT config on stdin, connects to the GitHub stand-in, takes at most one job, and
writes to stdout (the VM console, which fireactions puts in <pool dir>/<runner>.log) the lines
actions/runner v2.336.0 prints; README.md cites each. SIGTERM (fireactions' StopVMM) ends it
at once, as it ends firecracker and the guest with it: a running job is lost.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

RUNNER_VERSION = "2.336.0"


def stamp():
    # C# "{DateTime.UtcNow:u}": 2026-12-02 18:30:00Z
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())


def say(line=""):
    print(line, flush=True)


def call(api, what, jit, **body):
    req = urllib.request.Request(f"{api}/_standin/runner/{what}", method="POST",
                                 data=json.dumps({"jit_config": jit, **body}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--github-api", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--poll", type=float, default=0.5)
    args = p.parse_args(argv)
    jit = sys.stdin.readline().strip()
    api = args.github_api.rstrip("/")

    status, _ = call(api, "connect", jit)
    if status != 200:
        say("Failed to create a session. The runner registration has been deleted from the server, please re-configure."
            " Runner registrations are automatically deleted for runners that have not connected to the service recently.")
        return 1
    say()
    say("\u221a Connected to GitHub")
    say()
    say(f"Current runner version: '{RUNNER_VERSION}'")
    say(f"{stamp()}: Listening for Jobs")

    while True:
        status, job = call(api, "acquire", jit)
        if status == 200:
            break
        if status == 404:
            # Deregistered while idle: the listener's session is refused and it exits.
            say("Failed to create a session. The runner registration has been deleted from the server, please re-configure."
                " Runner registrations are automatically deleted for runners that have not connected to the service recently.")
            return 0
        time.sleep(args.poll)

    say(f"{stamp()}: Running job: {job['name']}")
    end = time.time() + float(job["duration"])
    while time.time() < end:
        call(api, "heartbeat", jit)
        time.sleep(min(args.poll, max(end - time.time(), 0)))
    result = job.get("result") or "Succeeded"
    call(api, "complete", jit, result=result)
    say(f"{stamp()}: Job {job['name']} completed with result: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
