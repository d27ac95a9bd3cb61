"""STAND-IN for the GitHub REST API endpoints runner-fleet and fireactions v0.4.0 use.

Not GitHub. See README.md for what it serves, where each answer comes from, and what it
leaves out. Test-only endpoints live under /_standin/.
"""

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOCS = "https://docs.github.com/rest/actions/self-hosted-runners"


def now():
    return time.time()


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class State:
    """Everything the stand-in knows, behind one lock."""

    def __init__(self, app_id, public_key, lost_after):
        self.lock = threading.Lock()
        self.app_id = app_id
        self.public_key = public_key
        self.lost_after = lost_after
        self.installations = {}  # org -> id
        self.tokens = {}  # installation token -> org
        self.runners = {}  # id -> runner record
        self.jobs = []  # FIFO queue and history
        self.events = []
        self.next_id = {"runner": 1, "job": 1, "installation": 1, "label": 1}

    def new_id(self, kind):
        value = self.next_id[kind]
        self.next_id[kind] = value + 1
        return value

    def event(self, kind, **fields):
        self.events.append({"time": now(), "kind": kind, **fields})


def runner_view(r):
    """GitHub's runner object (REST "List self-hosted runners for an organization")."""
    return {
        "id": r["id"],
        "name": r["name"],
        "os": "Linux",
        "status": r["status"],
        "busy": r["busy"],
        "labels": [{"id": i + 1, "name": name, "type": "custom"} for i, name in enumerate(r["labels"])],
    }


def job_view(j):
    return {k: v for k, v in j.items() if not k.startswith("_")}


class Handler(BaseHTTPRequestHandler):
    server_version = "github-standin"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("github-standin: " + fmt % args + "\n")

    @property
    def state(self):
        return self.server.state

    def send(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, status, message, **extra):
        self.send(status, {"message": message, "documentation_url": DOCS, **extra})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            return json.loads(self.rfile.read(length))
        except ValueError:
            return None

    def bearer(self):
        auth = self.headers.get("Authorization", "")
        for scheme in ("Bearer ", "token "):
            if auth.startswith(scheme):
                return auth[len(scheme):].strip()
        return None

    def app_jwt_ok(self):
        """An App JWT: RS256, iss = the App id (GitHub docs "Generating a JWT for a GitHub App")."""
        token = self.bearer()
        parts = token.split(".") if token else []
        if len(parts) != 3:
            return False
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
        except ValueError:
            return False
        if header.get("alg") != "RS256" or claims.get("exp", 0) < now():
            return False
        if self.state.app_id is not None and str(claims.get("iss")) != str(self.state.app_id):
            return False
        if self.state.public_key:
            return verify_rs256(self.state.public_key, (parts[0] + "." + parts[1]).encode(), b64url_decode(parts[2]))
        return True

    def installation_org(self):
        with self.state.lock:
            return self.state.tokens.get(self.bearer() or "")

    def route(self, method):
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            handled = self.dispatch(method, parts, query)
        except BrokenPipeError:
            return
        if handled is False:
            self.fail(404, "Not Found")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def dispatch(self, method, parts, query):
        if parts[:1] == ["_standin"]:
            return self.standin(method, parts[1:])
        if method == "GET" and len(parts) == 3 and parts[0] == "orgs" and parts[2] == "installation":
            return self.get_installation(parts[1])
        if method == "POST" and len(parts) == 4 and parts[:2] == ["app", "installations"] and parts[3] == "access_tokens":
            return self.create_token(parts[2])
        if len(parts) >= 4 and parts[0] == "orgs" and parts[2:4] == ["actions", "runners"]:
            org = parts[1]
            if self.installation_org() != org:
                return self.fail(401, "Bad credentials")
            rest = parts[4:]
            if method == "GET" and not rest:
                return self.list_runners(org, query)
            if method == "POST" and rest == ["generate-jitconfig"]:
                return self.generate_jitconfig(org)
            if len(rest) == 1 and rest[0].isdigit():
                if method == "GET":
                    return self.get_runner(org, int(rest[0]))
                if method == "DELETE":
                    return self.delete_runner(org, int(rest[0]))
        return False

    # --- App authentication -------------------------------------------------------------

    def get_installation(self, org):
        if not self.app_jwt_ok():
            return self.fail(401, "A JSON web token could not be decoded")
        with self.state.lock:
            if org not in self.state.installations:
                self.state.installations[org] = self.state.new_id("installation")
            iid = self.state.installations[org]
        return self.send(200, {"id": iid, "app_id": self.state.app_id, "account": {"login": org, "type": "Organization"}})

    def create_token(self, iid):
        if not self.app_jwt_ok():
            return self.fail(401, "A JSON web token could not be decoded")
        with self.state.lock:
            org = next((o for o, i in self.state.installations.items() if str(i) == iid), None)
            if org is None:
                return self.fail(404, "Not Found")
            token = "ghs_" + secrets.token_hex(18)
            self.state.tokens[token] = org
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now() + 3600))
        return self.send(201, {"token": token, "expires_at": expires})

    # --- REST: self-hosted runners ------------------------------------------------------

    def list_runners(self, org, query):
        per_page = min(int(query.get("per_page", 30)), 100)
        page = max(int(query.get("page", 1)), 1)
        with self.state.lock:
            runners = [r for r in self.state.runners.values() if r["org"] == org]
            if "name" in query:
                runners = [r for r in runners if r["name"] == query["name"]]
            views = [runner_view(r) for r in sorted(runners, key=lambda r: r["id"])]
        return self.send(200, {"total_count": len(views), "runners": views[(page - 1) * per_page:page * per_page]})

    def get_runner(self, org, rid):
        with self.state.lock:
            r = self.state.runners.get(rid)
            view = runner_view(r) if r and r["org"] == org else None
        return self.send(200, view) if view else self.fail(404, "Not Found")

    def delete_runner(self, org, rid):
        with self.state.lock:
            r = self.state.runners.get(rid)
            if not r or r["org"] != org:
                return self.fail(404, "Not Found")
            if r["busy"]:
                # GitHub documents two answers: 204, and 422 "Validation failed, or the
                # endpoint has been spammed." A busy runner gets the 422 here (README.md).
                self.state.event("delete-refused", runner=r["name"], reason="busy")
                return self.fail(422, "Validation Failed",
                                 errors=[f"Runner {r['name']!r} is still running a job"])
            del self.state.runners[rid]
            self.state.event("deregistered", runner=r["name"], id=rid)
        return self.send(204)

    def generate_jitconfig(self, org):
        body = self.body()
        if not isinstance(body, dict) or not body.get("name") or not isinstance(body.get("labels"), list):
            return self.fail(422, "Validation Failed", errors=["name and labels are required"])
        with self.state.lock:
            if any(r["name"] == body["name"] and r["org"] == org for r in self.state.runners.values()):
                return self.fail(409, "Already exists - A runner with the same name already exists")
            rid = self.state.new_id("runner")
            jit = secrets.token_urlsafe(24)
            r = {"id": rid, "name": body["name"], "org": org, "labels": list(body["labels"]),
                 "group_id": body.get("runner_group_id"), "status": "offline", "busy": False,
                 "_jit": jit, "job": None}
            self.state.runners[rid] = r
            self.state.event("registered", runner=r["name"], id=rid, labels=r["labels"])
        encoded = base64.b64encode(json.dumps({"runner_id": rid, "secret": jit}).encode()).decode()
        return self.send(201, {"runner": runner_view(r), "encoded_jit_config": encoded})

    # --- Stand-in only: the runner's side and the test's job queue ------------------------

    def runner_for(self, body):
        try:
            cfg = json.loads(base64.b64decode(body.get("jit_config", "")))
        except (ValueError, TypeError):
            return None
        r = self.state.runners.get(cfg.get("runner_id"))
        return r if r and r["_jit"] == cfg.get("secret") else None

    def standin(self, method, parts):
        body = self.body() if method == "POST" else {}
        if body is None:
            return self.fail(400, "Problems parsing JSON")
        if method == "GET" and parts == ["jobs"]:
            with self.state.lock:
                return self.send(200, {"jobs": [job_view(j) for j in self.state.jobs]})
        if method == "GET" and parts == ["events"]:
            with self.state.lock:
                return self.send(200, {"events": list(self.state.events)})
        if method == "POST" and parts == ["jobs"]:
            return self.queue_job(body)
        if method == "POST" and len(parts) == 2 and parts[0] == "runner":
            with self.state.lock:
                r = self.runner_for(body)
                if r is None:
                    # The registration is gone (deleted, or an ephemeral runner after its job).
                    return self.fail(404, "Runner registration not found")
                return self.runner_call(parts[1], r, body)
        return False

    def queue_job(self, body):
        labels = body.get("labels")
        if not body.get("org") or not isinstance(labels, list) or not labels:
            return self.fail(422, "org and labels are required")
        with self.state.lock:
            job = {"id": self.state.new_id("job"), "org": body["org"], "labels": labels,
                   "name": body.get("name") or "job", "duration": float(body.get("duration", 1)),
                   "result": body.get("result", "Succeeded"), "status": "queued", "runner": None,
                   "queued_at": now(), "started_at": None, "finished_at": None, "_beat": None}
            self.state.jobs.append(job)
            self.state.event("queued", job=job["id"])
        return self.send(201, job_view(job))

    @staticmethod
    def matches(job, runner):
        # A job runs on a runner that has every label it asks for.
        return job["status"] == "queued" and job["org"] == runner["org"] and set(job["labels"]) <= set(runner["labels"])

    def runner_call(self, call, r, body):
        """Called with the lock held."""
        if call == "connect":
            r["status"] = "online"
            self.state.event("online", runner=r["name"])
            return self.send(200, {"id": r["id"], "name": r["name"]})
        if call == "acquire":
            r["status"] = "online"
            if r["job"] is None:
                job = next((j for j in self.state.jobs if self.matches(j, r)), None)
                if job is None:
                    return self.send(204)
                job.update(status="in_progress", runner=r["name"], started_at=now(), _beat=now())
                r.update(busy=True, job=job["id"])
                self.state.event("assigned", runner=r["name"], job=job["id"])
            job = next(j for j in self.state.jobs if j["id"] == r["job"])
            return self.send(200, job_view(job))
        if call == "heartbeat":
            job = next((j for j in self.state.jobs if j["id"] == r["job"]), None)
            if job is not None:
                job["_beat"] = now()
            return self.send(200, {})
        if call == "complete":
            job = next((j for j in self.state.jobs if j["id"] == r["job"]), None)
            if job is not None and job["status"] == "in_progress":
                job.update(status="completed", result=body.get("result", job["result"]), finished_at=now())
                self.state.event("completed", runner=r["name"], job=job["id"])
            # A JIT runner is ephemeral: its registration goes with its one job.
            del self.state.runners[r["id"]]
            self.state.event("removed", runner=r["name"], reason="ephemeral")
            return self.send(200, {})
        if call == "disconnect":
            r["status"] = "offline"
            self.state.event("offline", runner=r["name"])
            return self.send(200, {})
        return self.fail(404, "Not Found")


def watch_lost(state, stop):
    """A job whose runner stops renewing it is lost: the runner died mid-job (it was killed)."""
    while not stop.wait(0.25):
        with state.lock:
            for job in state.jobs:
                if job["status"] == "in_progress" and now() - job["_beat"] > state.lost_after:
                    job.update(status="lost", finished_at=now())
                    state.event("lost", job=job["id"], runner=job["runner"])
                    for r in list(state.runners.values()):
                        if r["job"] == job["id"]:
                            r.update(status="offline", busy=False)


def verify_rs256(public_key_path, data, signature):
    with tempfile.NamedTemporaryFile() as sig:
        sig.write(signature)
        sig.flush()
        done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", public_key_path, "-signature", sig.name],
                              input=data, capture_output=True)
    return done.returncode == 0


def main(argv=None):
    p = argparse.ArgumentParser(description="GitHub REST stand-in (see README.md)")
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port; port 0 picks a free one")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--app-id", type=int, help="refuse App JWTs whose iss differs")
    p.add_argument("--app-public-key", help="PEM public key: verify App JWT signatures with openssl")
    p.add_argument("--lost-after", type=float, default=3.0, help="seconds without a job renewal before a job is lost")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.state = State(args.app_id, args.app_public_key, args.lost_after)
    server.verbose = args.verbose
    stop = threading.Event()
    threading.Thread(target=watch_lost, args=(server.state, stop), daemon=True).start()
    bound = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, args.port_file)
    print(f"github-standin: listening on http://{server.server_address[0]}:{bound}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
