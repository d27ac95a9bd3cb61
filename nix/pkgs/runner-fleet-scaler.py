"""runner-fleet-scaler: keep minRunners idle runners ready in every fireactions pool.

fireactions v0.4.0 only tops a pool up to min_runners VMs (server/pool.go Pool.Start); its
max_runners bounds nothing but POST /api/v1/pools/:id/scale, which adds one VM per call.
This program adds VMs through that route whenever a pool has fewer than minRunners idle
runners, and never lets a pool pass maxRunners VMs. It only adds: each runner VM is
ephemeral (one job, then it exits), so a pool falls back to its minimum by itself.

Busy and idle come from the host alone, never from GitHub's API: each VM's console log
(/var/lib/fireactions/pools/<pool>/<runner>.log, server/pool.go scaleUp) carries the lines
the Actions runner prints when it listens, takes a job and finishes one
(actions/runner src/Runner.Listener). The live VMs come from GET /api/v1/pools/:id/microvms.
Sources are cited in docs/upstream.md, "On-demand scaling (#20)".

The decision rule, the log parsing and the metrics text are pure functions; the rest is
wiring. A broken pools.json or an unreachable API gives one log line and a retry with
backoff, never an exit.
"""

import argparse
import base64
import fcntl
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---- console lines (actions/runner v2.336.0, cited in docs/upstream.md) -----------------
# Runner.cs:491       $"{DateTime.UtcNow:u}: Listening for Jobs"
# JobDispatcher.cs:378 $"{DateTime.UtcNow:u}: Running job: {message.JobDisplayName}"
# JobDispatcher.cs:591 $"{DateTime.UtcNow:u}: Job {message.JobDisplayName} completed with result: {result}"
# .NET's "u" format is yyyy'-'MM'-'dd HH':'mm':'ss'Z'. The line is searched, not anchored:
# journald's console forwarding puts "identifier[pid]: " (and maybe a timestamp) before it.
_STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z"
CONSOLE_LINE = re.compile(
    r"(?P<at>" + _STAMP + r"): (?:(?P<listening>Listening for Jobs)"
    r"|Running job: (?P<job>.*)"
    r"|Job (?P<done>.*) completed with result: (?P<result>\S+))\s*$")

LISTENING = "listening"
JOB_STARTED = "job-started"
JOB_FINISHED = "job-finished"

# A runner's state, from its console: booting (no line yet), idle, busy (took a job), done.
BOOTING = "booting"
IDLE = "idle"
BUSY = "busy"
DONE = "done"

# A console line longer than this is not one of the runner's; it is dropped unread.
MAX_LINE = 64 * 1024
# At most this much of one console log is read per tick (a huge log is caught up over ticks).
READ_CHUNK = 1024 * 1024
# The live VM list is re-read at least this often (seconds), in case a VM died without a job
# and another started between two passes (a VM that ran a job is re-listed as it finishes).
LIST_EVERY = 30.0

# runner-fleet-drain holds this exclusively from its pause to its resume; the scaler adds VMs
# only under a shared hold, never waiting for it: a scale call in flight delays the drain's
# pause until that VM is up (and drained with the rest), and no call starts during a drain.
SCALE_LOCK = "/run/runner-fleet/scale.lock"

POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$")


def parse_console_line(line):
    """The runner event a console line reports, or None."""
    m = CONSOLE_LINE.search(line.rstrip("\r\n"))
    if m is None:
        return None
    if m.group("listening"):
        return LISTENING
    if m.group("done") is not None:
        return JOB_FINISHED
    return JOB_STARTED


def next_state(state, event):
    """A runner's state after an event. A finished job is final: the runner is ephemeral."""
    if event is None or state == DONE:
        return state
    if event == JOB_FINISHED:
        return DONE
    if event == JOB_STARTED:
        return BUSY
    # "Listening for Jobs" after a job started (a reconnect) does not make the runner idle.
    return IDLE if state == BOOTING else state


def split_lines(partial, data):
    """(complete lines, rest) of partial + data; an over-long unfinished line is dropped."""
    buf = partial + data
    lines = buf.split(b"\n")
    rest = lines.pop()
    if len(rest) > MAX_LINE:
        rest = b""
    return [line for line in lines if len(line) <= MAX_LINE], rest


def occupied(states):
    """Runners that took a job and have not exited yet (busy, or done and about to exit)."""
    return sum(1 for s in states if s in (BUSY, DONE))


def decide(min_runners, max_runners, current, busy, paused, kept=0):
    """The pool's desired size and how many VMs to request now.

    desired = min(max, busy + min): minRunners idle runners on top of the busy ones, never
    more than maxRunners VMs. `kept` is what fireactions' own loop keeps (its min_runners):
    the scaler requests only the VMs above that, so the two never race for the same VM. A
    paused pool is never scaled (fireactions' scale route does not check the pause itself).
    Nothing is ever removed: VMs leave when their job ends.
    """
    busy = max(0, min(busy, current))
    desired = min(max_runners, busy + min_runners)
    base = max(current, 0 if paused else kept)
    if paused or base >= desired:
        return desired, 0
    return desired, desired - base


# ---- pools.json ------------------------------------------------------------------------

class PoolsError(Exception):
    pass


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000


def pool_limits(text):
    """{pool: (minRunners, maxRunners)} from pools.json text; PoolsError lists every problem."""
    try:
        pools = json.loads(text)
    except ValueError as e:
        raise PoolsError(f"pools.json: not valid JSON ({e})")
    if not isinstance(pools, list):
        raise PoolsError("pools.json: must be a JSON array")
    problems = []
    limits = {}
    for i, pool in enumerate(pools):
        at = f"pools.json[{i}]"
        if not isinstance(pool, dict):
            problems.append(f"{at}: must be an object")
            continue
        name, lo, hi = pool.get("name"), pool.get("minRunners"), pool.get("maxRunners")
        ok = True
        if not isinstance(name, str) or POOL_NAME.match(name) is None:
            problems.append(f"{at}.name: must be lowercase letters, digits and dashes (1-63 characters)")
            ok = False
        elif name in limits:
            problems.append(f"{at}.name: duplicate pool {name!r}")
            ok = False
        for key, value in (("minRunners", lo), ("maxRunners", hi)):
            if not _count(value):
                problems.append(f"{at}.{key}: must be an integer from 1 to 1000")
                ok = False
        if ok and lo > hi:
            problems.append(f"{at}.minRunners: {lo} is more than maxRunners ({hi})")
            ok = False
        if ok:
            limits[name] = (lo, hi)
    if problems:
        raise PoolsError("; ".join(problems))
    return limits


# ---- metrics ---------------------------------------------------------------------------

GAUGES = (
    ("current", "Runner VMs fireactions reports in the pool"),
    ("busy", "Runner VMs whose runner took a job and has not exited"),
    ("idle", "Runner VMs not running a job (booting or listening)"),
    ("desired", "min(maxRunners, busy + minRunners): the size the scaler keeps the pool at"),
    ("min_runners", "Idle runners kept ready (pools.json minRunners)"),
    ("max_runners", "Runner VMs the pool may run at once (pools.json maxRunners, bounded by fireactions' own)"),
    ("paused", "1 when fireactions reports the pool paused (never scaled then)"),
)
COUNTERS = (
    ("scale_ups_total", "Runner VMs added through POST /api/v1/pools/:id/scale"),
    ("failures_total", "Failed fireactions API calls for the pool (observations and scale requests)"),
)
PREFIX = "runner_fleet_scaler_pool_"


def _label(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(pools, up):
    """Prometheus text format: pools is {name: {gauge or counter: value}}."""
    out = ["# HELP runner_fleet_scaler_up 1 while the scaler reaches the fireactions API",
           "# TYPE runner_fleet_scaler_up gauge",
           f"runner_fleet_scaler_up {1 if up else 0}"]
    for kind, series in (("gauge", GAUGES), ("counter", COUNTERS)):
        for key, help_text in series:
            out.append(f"# HELP {PREFIX}{key} {help_text}")
            out.append(f"# TYPE {PREFIX}{key} {kind}")
            for name in sorted(pools):
                value = pools[name].get(key)
                if value is not None:
                    out.append(f'{PREFIX}{key}{{pool="{_label(name)}"}} {int(value)}')
    return "\n".join(out) + "\n"


# ---- wiring ----------------------------------------------------------------------------

def log(msg):
    print(f"runner-fleet-scaler: {msg}", file=sys.stderr, flush=True)


class ApiError(Exception):
    pass


class ApiAuthError(ApiError):
    """401: fireactions refused the basic-auth password."""


# The account render-fireactions-config writes into fireactions' basic_auth_users.
API_USER = "runner-fleet"


def read_password(path):
    """The API password (one line) from path, e.g. $CREDENTIALS_DIRECTORY/fireactions-api-password."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {getattr(e, 'strerror', None) or e}")
    password = text[:-1] if text.endswith("\n") else text
    if not password or "\n" in password:
        raise ValueError(f"{path}: must hold the fireactions API password on one line")
    return password


def checked_pool(pool, where):
    """A pool as fireactions v0.4.0 reports it (types.go Pool), or ApiError."""
    ok = isinstance(pool, dict) and isinstance(pool.get("name"), str) and isinstance(pool.get("status"), dict)
    ok = ok and all(isinstance(pool.get(k), int) and not isinstance(pool.get(k), bool) and pool[k] >= 0
                    for k in ("max_runners", "min_runners", "cur_runners"))
    if not ok or pool["status"].get("state") not in ("Active", "Paused"):
        raise ApiError(f"{where}: unexpected answer (not a fireactions pool)")
    return pool


def try_shared_lock(path):
    """An fd holding a shared flock on path, None while a drain holds it, or "absent" when no
    lock file exists (no drain has run since boot: tmpfiles makes it, the drain too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "absent"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


class Api:
    """fireactions v0.4.0's HTTP API (server/server.go routes, client.go)."""

    def __init__(self, base, timeout, password=None):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.headers = {}
        if password is not None:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{API_USER}:{password}".encode()).decode()

    def call(self, method, path):
        req = urllib.request.Request(self.base + path, method=method, data=b"" if method == "POST" else None,
                                     headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise ApiAuthError(f"{method} {path}: HTTP 401, basic auth as {API_USER!r} refused")
            try:
                detail = json.loads(e.read()).get("error", "")
            except (ValueError, AttributeError, OSError):
                detail = ""
            raise ApiError(f"{method} {path}: HTTP {e.code} {detail}".rstrip())
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ApiError(f"{method} {path}: {reason}")

    def pools(self):
        answer = self.call("GET", "/api/v1/pools")
        pools = answer.get("pools") if isinstance(answer, dict) else None
        if not isinstance(pools, list):
            raise ApiError("GET /api/v1/pools: unexpected answer (no pools list)")
        return {p["name"]: p for p in (checked_pool(p, "GET /api/v1/pools") for p in pools)}

    def pool(self, name):
        path = f"/api/v1/pools/{urllib.parse.quote(name)}"
        answer = self.call("GET", path)
        return checked_pool(answer.get("pool") if isinstance(answer, dict) else None, f"GET {path}")

    def microvms(self, name):
        path = f"/api/v1/pools/{urllib.parse.quote(name)}/microvms"
        answer = self.call("GET", path)
        vms = answer.get("micro_vms") if isinstance(answer, dict) else None
        if not isinstance(vms, list) or not all(isinstance(vm, dict) and isinstance(vm.get("VMID"), str) for vm in vms):
            raise ApiError(f"GET {path}: unexpected answer (no micro_vms list)")
        return {vm["VMID"] for vm in vms}

    def scale(self, name):
        self.call("POST", f"/api/v1/pools/{urllib.parse.quote(name)}/scale")


class ConsoleTail:
    """Follows one runner's console log from where it last stopped reading."""

    def __init__(self, path):
        self.path = path
        self.inode = None
        self.offset = 0
        self.partial = b""
        self.state = BOOTING

    def poll(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino != self.inode or st.st_size < self.offset:
            # A new file under the name (rotated) or a truncated one: read it from the start.
            self.inode, self.offset, self.partial = st.st_ino, 0, b""
        if st.st_size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(min(st.st_size - self.offset, READ_CHUNK))
        self.offset += len(data)
        lines, self.partial = split_lines(self.partial, data)
        for line in lines:
            self.state = next_state(self.state, parse_console_line(line.decode("utf-8", "replace")))


class PoolView:
    """What the scaler knows of one pool: its live runners' consoles and counters."""

    def __init__(self, name, pools_dir):
        self.name = name
        self.dir = os.path.join(pools_dir, name)
        self.tails = {}
        self.scale_ups = 0
        self.failures = 0
        self.last = {}
        self.scaling = False
        self.live_size = None
        self.listed_at = 0.0

    def observe(self, api, current, now):
        """Busy runners among the live VMs. The VM list is re-read when it may have changed: the
        size moved, a runner finished its job (it exits next), or LIST_EVERY seconds passed."""
        stale = now - self.listed_at >= LIST_EVERY
        if stale or self.live_size != current or any(t.state == DONE for t in self.tails.values()):
            live = api.microvms(self.name)
            self.tails = {n: self.tails.get(n) or ConsoleTail(os.path.join(self.dir, f"{n}.log")) for n in live}
            self.live_size, self.listed_at = current, now
        for tail in self.tails.values():
            tail.poll()
        states = [t.state for t in self.tails.values()]
        return occupied(states), states.count(DONE)


class Scaler:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.api, args.timeout, getattr(args, "password", None))
        self.limits = {}
        self.views = {}
        self.lock = threading.Lock()
        self.up = None  # unknown until the first call: the first failure is logged too
        self.said = {}
        self.pools_stat = None

    def say(self, topic, msg):
        """Logs msg unless it is what was last said on that topic (one line per change)."""
        if self.said.get(topic) != msg:
            self.said[topic] = msg
            if msg:
                log(msg)

    def reload_limits(self):
        path = self.args.pools
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key == self.pools_stat:
                return
            with open(path, encoding="utf-8") as f:
                limits = pool_limits(f.read())
        except (OSError, PoolsError, UnicodeDecodeError) as e:
            self.pools_stat = None
            self.say("pools", f"{path}: {getattr(e, 'strerror', None) or e}; keeping the last good pools ({', '.join(sorted(self.limits)) or 'none'})")
            return
        self.pools_stat = key
        if limits != self.limits:
            log(f"{path}: pools " + ", ".join(f"{n} min {lo} max {hi}" for n, (lo, hi) in sorted(limits.items())))
        self.say("pools", None)
        with self.lock:
            self.limits = limits

    def tick(self):
        """One pass over every pool; returns False when the API could not be reached."""
        self.reload_limits()
        try:
            reported = self.api.pools()
        except ApiError as e:
            # One line per change of the reason (unreachable, refused): a wrong password repeats
            # on every retry and would flood the journal.
            what = "refused the password" if isinstance(e, ApiAuthError) else "unreachable"
            if self.up is not False or self.said.get("api") != what:
                log(f"fireactions API at {self.args.api} {what} ({e}); retrying with backoff")
            self.said["api"] = what
            self.up = False
            return False
        if self.up is False:
            log(f"fireactions API at {self.args.api} reachable")
        self.said.pop("api", None)
        self.up = True
        with self.lock:
            limits = dict(self.limits)
        for name in list(self.views):
            if name not in limits:
                del self.views[name]
        for name, (lo, hi) in sorted(limits.items()):
            pool = reported.get(name)
            if pool is None:
                self.views.pop(name, None)
                self.say(f"missing:{name}", f"pool {name}: in pools.json but not (yet) in fireactions; not scaled")
                continue
            self.say(f"missing:{name}", None)
            self.step(name, lo, min(hi, pool["max_runners"]), pool)
        return True

    def step(self, name, lo, hi, pool):
        view = self.views.get(name) or self.views.setdefault(name, PoolView(name, self.args.pools_dir))
        current = pool["cur_runners"]
        paused = pool["status"]["state"] == "Paused"
        try:
            busy, finishing = view.observe(self.api, current, time.monotonic())
            busy = min(busy, current)
        except ApiError as e:
            view.failures += 1
            self.say(f"observe:{name}", f"pool {name}: {e}; not scaled this time")
            return
        self.say(f"observe:{name}", None)
        kept = min(pool["min_runners"], pool["max_runners"])
        desired, add = decide(lo, hi, current, busy, paused, kept)
        view.last = {"current": current, "busy": busy, "idle": current - busy, "desired": desired,
                     "min_runners": lo, "max_runners": hi, "paused": 1 if paused else 0}
        # fireactions v0.4.0's own loop computes its top-up before it takes the pool's lock
        # (pool.go l.124, l.166): a VM leaving while a scale call holds the lock would make it
        # add one VM too many. Runners that finished their job leave next, so wait for them.
        if add > 0 and not view.scaling and finishing == 0:
            held = try_shared_lock(self.args.lock)
            if held is None:
                self.say(f"drain:{name}", f"pool {name}: a drain holds {self.args.lock}; not scaled until it ends")
                return
            self.say(f"drain:{name}", None)
            log(f"pool {name}: {current - busy} idle < min {lo} (busy {busy}, current {current}, max {hi}): adding {add}")
            view.scaling = True
            threading.Thread(target=self.scale_up, args=(view, add, desired, kept, held), daemon=True).start()

    def scale_up(self, view, add, target, kept, held=None):
        """Up to `add` scale calls, each after re-reading the pool: none once it is paused, at
        `target`, or below what fireactions itself keeps (its own loop fills that first). `held`
        is the shared scale lock's fd, released when the calls are done."""
        try:
            for _ in range(add):
                pool = self.api.pool(view.name)
                cur = pool["cur_runners"]
                if pool["status"]["state"] == "Paused" or cur >= target or cur < kept:
                    return
                self.api.scale(view.name)
                if self.api.pool(view.name)["cur_runners"] <= cur:
                    # fireactions answered 200 without a new VM (its own bound) or the VM died at once.
                    return
                view.scale_ups += 1
        except ApiError as e:
            view.failures += 1
            log(f"pool {view.name}: scale-up failed: {e}")
        finally:
            view.scaling = False
            if isinstance(held, int):
                os.close(held)

    def metrics(self):
        pools = {}
        for name, view in list(self.views.items()):
            pools[name] = dict(view.last, scale_ups_total=view.scale_ups, failures_total=view.failures)
        return render_metrics(pools, self.up)

    def run(self, stop):
        backoff = 0.0
        while not stop.is_set():
            if self.tick():
                backoff = 0.0
                stop.wait(self.args.interval)
            else:
                backoff = min(self.args.max_backoff, max(self.args.interval, backoff * 2 or 1.0))
                stop.wait(backoff)


class MetricsHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        data = self.server.scaler.metrics().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_metrics(scaler, address, stop):
    """Binds the metrics endpoint, retrying in the background: scaling never waits for it."""
    host, port = address.rsplit(":", 1)
    delay = 1.0
    while not stop.is_set():
        try:
            httpd = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), MetricsHandler)
        except OSError as e:
            scaler.say("metrics", f"metrics endpoint {address}: {e.strerror or e}; retrying in {delay:g}s")
            stop.wait(delay)
            delay = min(delay * 2, 60.0)
            continue
        scaler.say("metrics", f"metrics on http://{address}/metrics")
        httpd.daemon_threads = True
        httpd.scaler = scaler
        # A long poll interval: it only bounds shutdown(), which is never called; requests wake it.
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 3600}, daemon=True).start()
        return httpd
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", default="/etc/runner-fleet/pools.json", help="minRunners and maxRunners per pool (re-read when it changes)")
    p.add_argument("--pools-dir", default="/var/lib/fireactions/pools", help="fireactions' per-pool directories (console logs)")
    p.add_argument("--api", default="http://127.0.0.1:8080", help="fireactions' bind_address as a URL")
    p.add_argument("--metrics-address", default="127.0.0.1:9102", help="host:port of the Prometheus endpoint")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between passes")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between retries while the API is down")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per API call (a scale call boots a VM)")
    p.add_argument("--lock", default=SCALE_LOCK, help="the lock runner-fleet-drain holds while it drains (no scaling then)")
    p.add_argument("--api-password-file", help=f"the API's basic-auth password for user {API_USER!r} (systemd: ${{CREDENTIALS_DIRECTORY}}/<credential>)")
    args = p.parse_args(argv)
    m = HOST_PORT.match(args.metrics_address)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        p.error(f"--metrics-address: {args.metrics_address!r} is not host:port")
    if not 0.05 <= args.interval <= 60 or not args.interval <= args.max_backoff <= 3600 or not 1 <= args.timeout <= 600:
        p.error("--interval must be 0.05..60 s, --max-backoff interval..3600 s, --timeout 1..600 s")
    return args


def main(argv=None):
    args = parse_args(argv)
    args.password = None
    if args.api_password_file:
        try:
            args.password = read_password(args.api_password_file)
        except ValueError as e:
            log(str(e))
            return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scaler = Scaler(args)
    log(f"watching {args.pools} and {args.pools_dir}; fireactions API {args.api}; every {args.interval:g}s")
    threading.Thread(target=serve_metrics, args=(scaler, args.metrics_address, stop), daemon=True).start()
    scaler.run(stop)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
