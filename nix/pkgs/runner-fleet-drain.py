"""Drain this host's fireactions pools so a step can run without killing a job.

    runner-fleet-drain [--timeout-minutes M] [--proceed-on-timeout] [--pools a,b] -- STEP...
        pause the pools; deregister idle runners from GitHub (then they may be stopped);
        wait for busy runners up to M minutes; run STEP; resume the pools.
        On timeout: `<host>: N jobs still running after M minutes; nothing was restarted`
        and exit 3 without running STEP (unless --proceed-on-timeout); the pools are resumed.
    runner-fleet-drain --reload [-- RENDER...]
        run RENDER (writes the new config), then POST /api/v1/reload (fireactions re-reads
        it: existing pools change in place, new pools start); pools the config no longer has
        are paused and their idle runners deregistered; their busy runners finish their job
        and are not replaced.

Deregistering first is the safe order: GitHub refuses to delete a busy runner (422), and a
deregistered runner can no longer be given a job, so nothing stopped afterwards was running
one. Everything it needs is in the rendered fireactions config (API address and basic-auth
account, GitHub App id and key, pools and their organizations): it runs as root, which can read
it, so no secret comes through argv or the environment. fireactions v0.4.0 behaviour:
docs/upstream.md.
"""

import argparse
import base64
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

EXIT_TIMEOUT = 3
# runner-fleet-drain.nix puts the store path here.
OPENSSL = "openssl"
GITHUB_API = "https://api.github.com"
# Test hosts only: where the GitHub stand-in is (fireactions v0.4.0 always uses api.github.com).
GITHUB_API_FILE = "/etc/runner-fleet/github-api-url"
# Held exclusively from the pause to the resume: runner-fleet-scaler adds VMs only under a
# shared hold it never waits for, so no VM is added while the host drains, and a scale call
# already in flight ends (its VM up, and drained with the rest) before the pause.
SCALE_LOCK = "/run/runner-fleet/scale.lock"


class DrainError(Exception):
    pass


class AuthRefused(DrainError):
    """fireactions answered 401: retrying with the same credentials cannot help."""


def log(msg):
    print(f"runner-fleet-drain: {msg}", file=sys.stderr, flush=True)


def request(method, url, token=None, body=None, timeout=10, authorization=None):
    """(status, parsed JSON or None). Network failures raise DrainError."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if authorization:
        headers["Authorization"] = authorization
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, (json.loads(raw) if raw else None)
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError) as e:
        raise DrainError(f"{method} {url}: {getattr(e, 'reason', e)}")


def basic_auth(config):
    """The Authorization header for the config's basic-auth account (the renderer writes one,
    "runner-fleet"), or None when the API asks for none (basic_auth_enabled false)."""
    users = config.get("basic_auth_users") or {}
    if not config.get("basic_auth_enabled") or not isinstance(users, dict) or not users:
        return None
    user = "runner-fleet" if "runner-fleet" in users else sorted(users)[0]
    return "Basic " + base64.b64encode(f"{user}:{users[user]}".encode()).decode()


class Fireactions:
    """The v0.4.0 API on the config's bind_address."""

    def __init__(self, bind_address, authorization=None):
        host, _, port = bind_address.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        self.base = f"http://{host}:{port}/api/v1"
        self.authorization = authorization

    def call(self, method, path):
        status, body = request(method, self.base + path, authorization=self.authorization)
        if status == 401:
            # fireactions reads its accounts once, at start (docs/upstream.md): a password that
            # changed since, or a config rendered for another daemon.
            raise AuthRefused(f"fireactions {method} {path}: 401, the API refused the config's basic-auth "
                              "password (fireactions keeps the one it started with; restart it to take the new one)")
        if status != 200:
            raise DrainError(f"fireactions {method} {path}: {status} {(body or {}).get('error', '')}".rstrip())
        return body

    def pools(self):
        return [p["name"] for p in self.call("GET", "/pools")["pools"]]

    def runners(self, pool):
        return [vm["VMID"] for vm in self.call("GET", f"/pools/{pool}/microvms")["micro_vms"]]


class GitHub:
    """App JWT (RS256, signed by openssl) -> installation token per organization -> REST."""

    def __init__(self, api, app_id, key_pem):
        self.api = api.rstrip("/")
        self.app_id = app_id
        self.key_pem = key_pem
        self.tokens = {}

    def jwt(self):
        def enc(obj):
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        now = int(time.time())
        head = enc({"alg": "RS256", "typ": "JWT"}) + "." + enc({"iat": now - 60, "exp": now + 540, "iss": str(self.app_id)})
        return head + "." + base64.urlsafe_b64encode(sign_rs256(self.key_pem, head.encode())).rstrip(b"=").decode()

    def token(self, org):
        if org not in self.tokens:
            app = self.jwt()
            status, inst = request("GET", f"{self.api}/orgs/{org}/installation", app)
            if status != 200:
                raise DrainError(f"GitHub: no App installation for {org} ({status})")
            status, tok = request("POST", f"{self.api}/app/installations/{inst['id']}/access_tokens", app)
            if status != 201:
                raise DrainError(f"GitHub: installation token for {org}: {status}")
            self.tokens[org] = tok["token"]
        return self.tokens[org]

    def runners(self, org):
        out, page = [], 1
        while True:
            status, body = request("GET", f"{self.api}/orgs/{org}/actions/runners?per_page=100&page={page}", self.token(org))
            if status != 200:
                raise DrainError(f"GitHub: listing {org}'s runners: {status}")
            out += body["runners"]
            if len(body["runners"]) < 100:
                return out
            page += 1

    def delete(self, org, runner_id):
        """204 deleted, 404 already gone, 422 busy (GitHub refuses): True when it is gone."""
        status, _ = request("DELETE", f"{self.api}/orgs/{org}/actions/runners/{runner_id}", self.token(org))
        if status in (204, 404):
            return True
        if status == 422:
            return False
        raise DrainError(f"GitHub: deleting runner {runner_id} of {org}: {status}")


def sign_rs256(key_pem, data):
    # The key reaches openssl through a pipe: never a file, argv or the environment.
    r, w = os.pipe()
    os.write(w, key_pem.encode())
    os.close(w)
    try:
        done = subprocess.run([OPENSSL, "dgst", "-sha256", "-sign", f"/dev/fd/{r}"], input=data,
                              capture_output=True, pass_fds=(r,))
    finally:
        os.close(r)
    if done.returncode != 0:
        raise DrainError("signing the GitHub App JWT failed: " + done.stderr.decode(errors="replace").strip())
    return done.stdout


def host_name(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["name"]
    except (OSError, ValueError, KeyError):
        return socket.gethostname()


def load_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        orgs = {p["name"]: p["runner"]["organization"] for p in config["pools"]}
        return config, orgs
    except OSError as e:
        raise DrainError(f"{path}: {e.strerror}")
    except (ValueError, KeyError, TypeError) as e:
        raise DrainError(f"{path}: not a rendered fireactions config ({e})")


def lock_scaling(path):
    """Blocks until no scale call is in flight, then keeps the scaler out; held until exit."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        raise DrainError(f"{path}: {e.strerror}")
    return fd


def pause(fa, pools):
    for pool in pools:
        fa.call("POST", f"/pools/{pool}/pause")
    if pools:
        log(f"paused {', '.join(pools)}")


def deregister_idle(fa, gh, pools, orgs):
    """One pass: deregister this host's idle runners; return (busy names, deregistered names)."""
    mine = {}
    for pool in pools:
        for name in fa.runners(pool):
            mine[name] = orgs.get(pool)
    busy, gone = [], []
    for org in sorted({o for o in mine.values() if o}):
        for r in gh.runners(org):
            if r["name"] not in mine:
                continue
            if not r["busy"] and gh.delete(org, r["id"]):
                gone.append(r["name"])
                log(f"deregistered idle runner {r['name']}")
            else:
                busy.append(r["name"])
    return busy, gone


def drain(fa, gh, pools, orgs, timeout_minutes, poll, wait=True):
    """Pause, then deregister idle runners until none is busy (or time is up). Returns busy count.

    Done after a pass that finds nothing left to deregister, and never after the first pass:
    a VM the pool loop was starting as we paused registers a moment later. Without `wait`,
    two passes and no waiting: busy runners finish their job and the paused pool does not
    replace them.
    """
    pause(fa, pools)
    deadline = time.monotonic() + timeout_minutes * 60
    passes = 0
    while True:
        busy, gone = deregister_idle(fa, gh, pools, orgs)
        passes += 1
        if passes >= 2 and (not wait or not (busy or gone)):
            return 0
        if busy and time.monotonic() >= deadline:
            return len(busy)
        if busy:
            log(f"waiting for {len(busy)} running job(s): {', '.join(sorted(busy))}")
        time.sleep(poll)


def resume(fa, pools, patience=60):
    """After a restart the API may need a moment; pools that no longer exist are skipped."""
    deadline = time.monotonic() + patience
    while True:
        try:
            present = set(fa.pools())
            break
        except AuthRefused:
            raise
        except DrainError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)
    for pool in pools:
        if pool in present:
            fa.call("POST", f"/pools/{pool}/resume")
    log(f"resumed {', '.join(p for p in pools if p in present) or 'nothing'}")


def reload(fa, config_path, render, poll, github_api):
    """Render the new config (the `render` step), reload fireactions, drain the removed pools.

    The removed pools' organizations are only in the old config, so it is read first.
    """
    _, old_orgs = load_config(config_path)
    if render and subprocess.call(render) != 0:
        raise DrainError("rendering the new config failed; fireactions was not reloaded")
    config, orgs = load_config(config_path)
    before = set(fa.pools())
    fa.call("POST", "/reload")
    removed = sorted(before - set(orgs))
    log(f"reloaded fireactions: {', '.join(sorted(orgs))}" + (f"; draining removed {', '.join(removed)}" if removed else ""))
    if removed:
        gh = GitHub(github_api, config["github"]["app_id"], config["github"]["app_private_key"])
        drain(fa, gh, removed, old_orgs, 0, poll, wait=False)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="/run/fireactions/config.yaml", help="the rendered fireactions config")
    p.add_argument("--host-json", default="/etc/runner-fleet/host.json", help="for the host name in messages")
    p.add_argument("--github-api", help=f"GitHub REST base URL (default: {GITHUB_API_FILE} if present, else {GITHUB_API})")
    p.add_argument("--pools", help="comma-separated pools (default: every pool fireactions runs)")
    p.add_argument("--timeout-minutes", type=float, default=60.0)
    p.add_argument("--proceed-on-timeout", action="store_true", help="run STEP even when jobs are still running")
    p.add_argument("--poll-seconds", type=float, default=2.0)
    p.add_argument("--no-resume", action="store_true", help="leave the pools paused after STEP (the host is being removed)")
    p.add_argument("--reload", action="store_true", help="run STEP (the renderer), reload fireactions, drain pools it no longer has")
    p.add_argument("--lock", default=SCALE_LOCK, help="held exclusively while draining: runner-fleet-scaler adds no VM meanwhile")
    p.add_argument("step", nargs=argparse.REMAINDER, help="-- COMMAND: the step to run once drained (with --reload: the renderer)")
    args = p.parse_args(argv)
    step = args.step[1:] if args.step[:1] == ["--"] else args.step
    host = host_name(args.host_json)

    api = args.github_api
    if api is None:
        api = open(GITHUB_API_FILE).read().strip() if os.path.exists(GITHUB_API_FILE) else GITHUB_API
    try:
        config, orgs = load_config(args.config)
        fa = Fireactions(config["bind_address"], basic_auth(config))
        if args.reload:
            return reload(fa, args.config, step, args.poll_seconds, api)
        gh = GitHub(api, config["github"]["app_id"], config["github"]["app_private_key"])
        # Before the pause: a scale call in flight ends first, and none starts until we exit.
        # (A reload needs no lock: the pools it drains are gone from pools.json, which the
        # scaler reads, so it scales them no more.)
        lock_scaling(args.lock)
        pools = args.pools.split(",") if args.pools else fa.pools()
        running = drain(fa, gh, pools, orgs, args.timeout_minutes, args.poll_seconds)
    except DrainError as e:
        log(f"{host}: {e}; nothing was restarted")
        return 1

    if running:
        line = f"{host}: {running} jobs still running after {args.timeout_minutes:g} minutes"
        if not args.proceed_on_timeout:
            # Nothing happened (no restart, reboot or removal): the host goes on serving, its
            # pools resumed even with --no-resume, and the line is the last one.
            try:
                resume(fa, pools)
            except DrainError as e:
                log(f"{host}: resuming failed: {e}")
            print(f"{line}; nothing was restarted", file=sys.stderr, flush=True)
            return EXIT_TIMEOUT
        log(f"{line}; proceeding anyway (deploy.drainProceedOnTimeout)")
    rc = subprocess.call(step) if step else 0
    if args.no_resume:
        return rc
    try:
        resume(fa, pools)
    except DrainError as e:
        log(f"{host}: resuming failed: {e}")
        rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
