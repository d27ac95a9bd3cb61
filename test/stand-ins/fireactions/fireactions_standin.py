"""STAND-IN for the fireactions v0.4.0 server (`fireactions server --config FILE`).

Not fireactions: its Go module cannot be fetched here. Each behaviour follows
hostinger/fireactions at tag v0.4.0 (commit 732b245); README.md cites file, function
and line for every one. Its "microVMs" are runner_vm.py processes.
"""

import argparse
import base64
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v0.4.0-standin"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal", "panic", "trace")
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$")
HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} fireactions-standin: {msg}", file=sys.stderr, flush=True)


class ConfigError(Exception):
    pass


def default_config():
    # server/config.go DefaultConfig
    return {"bind_address": ":8080", "metrics": {"enabled": True, "address": ":8081"},
            "basic_auth_enabled": False, "basic_auth_users": {}, "github": {"app_private_key": "", "app_id": 0},
            "pools": [], "log_level": "debug", "debug": False}


def load_config(path, into):
    """server/config.go Config.Load: decode the file over the current values (no validation)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"open file: {e.strerror}: {path}")
    except ValueError as e:
        # Our renderer writes JSON, which is YAML; this stand-in reads only that subset.
        raise ConfigError(f"{path}: not JSON ({e}); the stand-in reads the JSON the renderer writes")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    # yaml.v3 refuses to decode these into Config's bool and map[string]string fields.
    if "basic_auth_enabled" in data and not isinstance(data["basic_auth_enabled"], bool):
        raise ConfigError(f"{path}: basic_auth_enabled: not a bool")
    users = data.get("basic_auth_users")
    if users is not None and not (isinstance(users, dict) and all(isinstance(v, str) for v in users.values())):
        raise ConfigError(f"{path}: basic_auth_users: not a map of user to password")
    merged = dict(into)
    merged.update(data)
    return merged


def validate_config(c):
    """server/config.go Config.Validate: top-level tags only (the pools slice has no `dive`)."""
    problems = []

    def host_port(value):
        m = HOST_PORT.match(value) if isinstance(value, str) else None
        return bool(m) and 0 <= int(m.group(2)) <= 65535

    if not c.get("bind_address") or not host_port(c["bind_address"]):
        problems.append("bind_address: required, host:port")
    metrics = c.get("metrics") or {}
    if metrics.get("enabled") and not host_port(metrics.get("address")):
        problems.append("metrics.address: required when enabled, host:port")
    gh = c.get("github")
    if not isinstance(gh, dict) or not gh.get("app_private_key") or not gh.get("app_id"):
        problems.append("github: app_id and app_private_key are required")
    if not isinstance(c.get("pools"), list) or len(c["pools"]) < 1:
        problems.append("pools: required, at least 1")
    if c.get("log_level") not in LOG_LEVELS:
        problems.append("log_level: one of " + " ".join(LOG_LEVELS))
    # basic_auth_users' `required_if=basic_auth_enabled true` is never checked: validator looks the
    # parameter up as a Go field name (there is none called basic_auth_enabled), finds nothing and
    # passes. Even when found, `required` on a map only asks for non-nil, and the default is {}.
    if problems:
        raise ConfigError("config: " + "; ".join(problems))


class GinPanic(Exception):
    """A panic in server.New, outside any handler (gin.Recovery does not catch it): the process dies."""


def basic_auth_pairs(c):
    """gin v1.10.1 auth.go processAccounts: the exact Authorization values accepted, or None when
    basic auth is off. Built once, at start: Reload never rebuilds it."""
    if not c.get("basic_auth_enabled"):
        return None
    accounts = c.get("basic_auth_users") or {}
    if not accounts:
        raise GinPanic("Empty list of authorized credentials")
    pairs = []
    for user, password in accounts.items():
        if user == "":
            raise GinPanic("User can not be empty")
        pairs.append("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    return pairs


def authorized(pairs, header):
    """gin authPairs.searchCredential: the whole header against each value, in constant time."""
    if pairs is None:
        return True
    if not header:
        return False
    found = False
    for value in pairs:
        found |= hmac.compare_digest(value.encode(), header.encode())
    return found


class GitHub:
    """helper/github/client.go: App JWT -> installation token -> REST (go-github v63)."""

    def __init__(self, api, app_id, key_pem):
        self.api = api.rstrip("/")
        self.app_id = app_id
        self.key_pem = key_pem

    def jwt(self):
        def enc(obj):
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        t = int(time.time())
        signing_input = enc({"alg": "RS256", "typ": "JWT"}) + "." + enc({"iat": t - 30, "exp": t + 540, "iss": str(self.app_id)})
        return signing_input + "." + base64.urlsafe_b64encode(sign_rs256(self.key_pem, signing_input.encode())).rstrip(b"=").decode()

    def call(self, method, path, token, body=None):
        req = urllib.request.Request(self.api + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"github: {method} {path}: {e.code} {e.read().decode(errors='replace')[:200]}")
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"github: {method} {path}: {e}")

    def generate_jit_config(self, org, name, group_id, labels):
        app = self.jwt()
        installation = self.call("GET", f"/orgs/{org}/installation", app)
        token = self.call("POST", f"/app/installations/{installation['id']}/access_tokens", app)["token"]
        return self.call("POST", f"/orgs/{org}/actions/runners/generate-jitconfig", token,
                         {"name": name, "runner_group_id": group_id, "labels": labels})["encoded_jit_config"]


def sign_rs256(key_pem, data):
    # The key goes to openssl through a pipe, never a file or argv.
    r, w = os.pipe()
    os.write(w, key_pem.encode())
    os.close(w)
    try:
        done = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"/dev/fd/{r}"], input=data,
                              capture_output=True, pass_fds=(r,))
    finally:
        os.close(r)
    if done.returncode != 0:
        raise RuntimeError("github: signing the App JWT failed: " + done.stderr.decode(errors="replace").strip())
    return done.stdout


class Metrics:
    """server/metrics.go: the v0.4.0 metric names (namespace fireactions)."""

    GAUGES = ("fireactions_pool_max_runners_count", "fireactions_pool_min_runners_count",
              "fireactions_pool_current_runners_count", "fireactions_pool_status")
    COUNTERS = ("fireactions_pool_scale_requests", "fireactions_pool_scale_failures", "fireactions_pool_scale_successes")
    HELP = {
        "fireactions_server_up": ("gauge", "Is the server up"),
        "fireactions_pool_max_runners_count": ("gauge", "Maximum number of runners in a pool"),
        "fireactions_pool_min_runners_count": ("gauge", "Minimum number of runners in a pool"),
        "fireactions_pool_current_runners_count": ("gauge", "Current number of runners in a pool"),
        "fireactions_pool_scale_requests": ("counter", "Number of scale requests for a pool"),
        "fireactions_pool_scale_failures": ("counter", "Number of scale failures for a pool"),
        "fireactions_pool_scale_successes": ("counter", "Number of scale successes for a pool"),
        "fireactions_pool_total": ("gauge", "Total number of pools"),
        "fireactions_pool_status": ("gauge", "Status of a pool. 0 is paused, 1 is active."),
    }

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {name: {} for name in self.GAUGES + self.COUNTERS}
        self.up = 0
        self.total = 0

    def set(self, name, pool, value):
        with self.lock:
            self.values[name][pool] = float(value)

    def inc(self, name, pool):
        with self.lock:
            self.values[name][pool] = self.values[name].get(pool, 0.0) + 1

    def text(self):
        lines = []
        with self.lock:
            for name, (kind, help_text) in self.HELP.items():
                if name in self.values and not self.values[name]:
                    continue
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                if name == "fireactions_server_up":
                    lines.append(f"{name} {self.up}")
                elif name == "fireactions_pool_total":
                    lines.append(f"{name} {self.total}")
                else:
                    lines += [f'{name}{{pool="{pool}"}} {value:g}' for pool, value in sorted(self.values[name].items())]
        return "\n".join(lines) + "\n"


class Pool:
    """server/pool.go Pool."""

    def __init__(self, server, config):
        self.server = server
        self.config = config
        self.machines = {}  # runner name -> Popen
        self.machines_mu = threading.Lock()
        self.lock = threading.Lock()
        self.is_active = True
        self.stop_ch = threading.Event()
        os.makedirs(self.get_dir(), mode=0o755, exist_ok=True)
        m = server.metrics
        m.set("fireactions_pool_current_runners_count", self.name, self.size())
        m.set("fireactions_pool_max_runners_count", self.name, config["max_runners"])
        m.set("fireactions_pool_min_runners_count", self.name, config["min_runners"])
        m.set("fireactions_pool_status", self.name, 1)
        with m.lock:
            m.total += 1

    @property
    def name(self):
        return self.config["name"]

    def get_dir(self):
        return os.path.join(self.server.root, "var/lib/fireactions/pools", self.config["name"])

    def size(self):
        return len(self.machines)

    def start(self):
        # Pool.Start: every second, unless paused, top the pool up to min_runners.
        while not self.stop_ch.wait(1.0):
            self.server.metrics.set("fireactions_pool_current_runners_count", self.name, self.size())
            if not self.is_active:
                continue
            try:
                self.scale(self.config["min_runners"] - self.size())
            except RuntimeError as e:
                log(f"pool {self.name}: Failed to scale pool: {e}")

    def stop(self):
        # Pool.Stop: stop the loop, then StopVMM (SIGTERM to the VMM) every machine.
        self.stop_ch.set()
        with self.lock:
            for name, proc in list(self.machines.items()):
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                with self.machines_mu:
                    self.machines.pop(name, None)
                log(f"pool {self.name}: Forcefully stopped Firecracker VM {name}")

    def scale(self, replicas):
        # Pool.Scale: a no-op (not an error) outside [min, max] or when nothing changes.
        with self.lock:
            if replicas < 0:
                return
            cur = self.size()
            des = cur + replicas
            if des > self.config["max_runners"] or des < self.config["min_runners"] or des == cur:
                return
            for _ in range(cur, des):
                try:
                    self.scale_up()
                except RuntimeError:
                    self.server.metrics.inc("fireactions_pool_scale_failures", self.name)
                    raise
                self.server.metrics.inc("fireactions_pool_scale_successes", self.name)

    def pause(self):
        self.is_active = False

    def resume(self):
        self.is_active = True

    def scale_up(self):
        # Pool.scaleUp: name, log file, JIT config, then start the VM with its console on the log.
        runner = self.config["runner"]
        name = f"{runner['name']}-{secrets.token_hex(12)}"
        log_file = open(os.path.join(self.get_dir(), f"{name}.log"), "wb")
        try:
            jit = self.server.github.generate_jit_config(runner["organization"], name, runner.get("group_id"),
                                                         runner.get("labels"))
            proc = subprocess.Popen([sys.executable, self.server.vm_program, "--github-api", self.server.github.api,
                                     "--name", name], stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
                                    start_new_session=True)
        except (RuntimeError, OSError) as e:
            log_file.close()
            raise RuntimeError(str(e))
        # The VM reads its JIT config from MMDS upstream; here from stdin (never argv or env).
        proc.stdin.write(jit.encode() + b"\n")
        proc.stdin.close()
        with self.machines_mu:
            self.machines[name] = proc
        threading.Thread(target=self.reap, args=(name, proc, log_file), daemon=True).start()
        log(f"pool {self.name}: Firecracker VM {name} started")

    def reap(self, name, proc, log_file):
        proc.wait()
        with self.machines_mu:
            if self.machines.get(name) is proc:
                del self.machines[name]
        log_file.close()
        log(f"pool {self.name}: Firecracker VM {name} exited")

    def view(self):
        # server/convert.go convertPool, fireactions types.go Pool
        state, message = ("Active", "Pool is active") if self.is_active else ("Paused", "Pool is paused")
        return {"name": self.name, "max_runners": self.config["max_runners"], "min_runners": self.config["min_runners"],
                "cur_runners": self.size(), "status": {"state": state, "message": message}}


class Server:
    def __init__(self, path, root, github_api, vm_program):
        self.path = path
        self.root = root
        self.vm_program = vm_program
        self.config = load_config(path, default_config())
        validate_config(self.config)
        self.auth = basic_auth_pairs(self.config)
        self.github = GitHub(github_api, self.config["github"]["app_id"], self.config["github"]["app_private_key"])
        self.metrics = Metrics()
        self.pools = {}
        self.lock = threading.Lock()

    def start_pool(self, config):
        pool = Pool(self, config)
        self.pools[pool.name] = pool
        threading.Thread(target=pool.start, daemon=True).start()
        log(f"Pool {pool.name} started")

    def reload(self):
        # Server.Reload: existing pools get the new config, new pools start, nothing else.
        with self.lock:
            self.config = load_config(self.path, self.config)
            for pc in self.config.get("pools") or []:
                pool = self.pools.get(pc["name"])
                if pool is not None:
                    pool.config = pc
                    log(f"Pool {pc['name']} reloaded")
                    continue
                self.start_pool(pc)

    def shutdown(self):
        # Server.Run's ctx.Done branch: Pool.Stop on every pool, concurrently.
        threads = [threading.Thread(target=p.stop) for p in list(self.pools.values())]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def api_route(method, parts):
    """Is this one of the routes server/server.go l.109-119 registers under /api/v1?"""
    if parts[:2] != ["api", "v1"]:
        return False
    rest = parts[2:]
    if method == "GET":
        return rest == ["pools"] or (len(rest) == 2 and rest[0] in ("pools", "microvms")) or (
            len(rest) == 3 and rest[0] == "pools" and rest[2] == "microvms")
    if method == "POST":
        return rest == ["reload"] or (len(rest) == 3 and rest[0] == "pools" and rest[2] in ("scale", "pause", "resume"))
    return False


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse_unauthorized(self, method, parts):
        """gin.BasicAuth on the /api group (server/server.go l.104-107): only routes registered
        under /api ask; an unknown path is gin's 404 before any group middleware. Refused: 401,
        no body, WWW-Authenticate with gin's default realm. True when it answered."""
        if not api_route(method, parts) or authorized(self.server.fa.auth, self.headers.get("Authorization")):
            return False
        self.send_response(401)
        self.send_header("Www-Authenticate", 'Basic realm="Authorization Required"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def pool_or_404(self, pool_id):
        with self.server.fa.lock:
            pool = self.server.fa.pools.get(pool_id)
        if pool is None:
            self.send(404, {"error": "pool not found"})
        return pool

    def do_GET(self):
        fa = self.server.fa
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts == ["healthz"]:
            return self.send(200, {"status": "OK"})
        if parts == ["version"]:
            return self.send(200, {"version": VERSION})
        if self.refuse_unauthorized("GET", parts):
            return None
        if parts == ["api", "v1", "pools"]:
            with fa.lock:
                pools = list(fa.pools.values())
            return self.send(200, {"pools": [p.view() for p in pools]})
        if len(parts) == 4 and parts[:3] == ["api", "v1", "pools"]:
            pool = self.pool_or_404(parts[3])
            return pool and self.send(200, {"pool": pool.view()})
        if len(parts) == 5 and parts[:3] == ["api", "v1", "pools"] and parts[4] == "microvms":
            with fa.lock:
                pool = fa.pools.get(parts[3])
            if pool is None:
                return self.send(500, {"error": "pool not found"})
            with pool.machines_mu:
                names = sorted(pool.machines)
            # No network here: the stand-in VMs have no IP address.
            return self.send(200, {"micro_vms": [{"VMID": n, "IPAddr": ""} for n in names]})
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        fa = self.server.fa
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if self.refuse_unauthorized("POST", parts):
            return None
        if parts == ["api", "v1", "reload"]:
            try:
                fa.reload()
            except ConfigError as e:
                return self.send(500, {"error": f"loading config: {e}"})
            return self.send(200, {"message": "Pools reloaded successfully"})
        if len(parts) == 5 and parts[:3] == ["api", "v1", "pools"] and parts[4] in ("scale", "pause", "resume"):
            action = parts[4]
            if action == "scale":
                # Server.ScalePool counts the request before looking the pool up.
                fa.metrics.inc("fireactions_pool_scale_requests", parts[3])
            with fa.lock:
                pool = fa.pools.get(parts[3])
            if pool is None:
                return self.send(500, {"error": "pool not found"})
            if action == "scale":
                try:
                    pool.scale(1)
                except RuntimeError as e:
                    return self.send(500, {"error": str(e)})
                return self.send(200, {"message": "Pool scaled successfully"})
            getattr(pool, action)()
            fa.metrics.set("fireactions_pool_status", pool.name, 1 if action == "resume" else 0)
            return self.send(200, {"message": f"Pool {action}d successfully"})
        return self.send(404, {"error": "not found"})


class MetricsHandler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_response(404)
            self.end_headers()
            return
        data = self.server.fa.metrics.text().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def listen(address, handler, fa):
    host, _, port = address.rpartition(":")
    httpd = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)
    httpd.daemon_threads = True
    httpd.fa = fa
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main(argv=None):
    p = argparse.ArgumentParser(description="fireactions v0.4.0 server STAND-IN (see README.md)")
    p.add_argument("-f", "--config", default="/etc/fireactions/config.yaml")
    p.add_argument("--root", default="/", help="prefix for /var/lib/fireactions (a test host's root)")
    p.add_argument("--github-api", default="https://api.github.com", help="GitHub REST base URL (upstream: fixed)")
    p.add_argument("--vm-program", default=os.path.join(HERE, "runner_vm.py"))
    args = p.parse_args(argv)

    try:
        fa = Server(args.config, args.root, args.github_api, args.vm_program)
    except ConfigError as e:
        print(f"Error: config: {e}", file=sys.stderr)
        return 1
    except GinPanic as e:
        # What a Go panic prints and its exit status (the stack trace is left out).
        print(f"panic: {e}", file=sys.stderr)
        return 2

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log(f"Starting server on {fa.config['bind_address']}")
    try:
        servers = [listen(fa.config["bind_address"], ApiHandler, fa)]
        if (fa.config.get("metrics") or {}).get("enabled"):
            servers.append(listen(fa.config["metrics"]["address"], MetricsHandler, fa))
    except OSError as e:
        print(f"Error: failed to start server: {e}", file=sys.stderr)
        return 1
    # Server.Run starts the pools after binding the API listener and before the metrics one;
    # binding both first keeps a half-started stand-in from leaving VMs behind.
    for pc in fa.config["pools"]:
        fa.start_pool(pc)
    fa.metrics.up = 1
    while not stopping.wait(0.5):
        pass
    log("Shutting down server")
    fa.shutdown()
    for s in servers:
        s.shutdown()
    log("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
