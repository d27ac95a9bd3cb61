"""runner-fleet-exporter: what a runner-fleet host is running, in Prometheus text format.

GET /metrics serves this host's own series:
  - the NixOS system: current, booted and profile generation and store paths, whether a test
    activation is live, whether a reboot is pending (the profile's kernel, initrd or modules
    differ from the booted system's, the rule the deploy reboots by), and when the last switch was;
  - the secrets vault-agent renders (present and non-empty, and when each was written), and
    whether all of them are, the condition runner-fleet-secrets waits for;
  - the state of the units that matter (vault-agent, runner-fleet-secrets, the runners);
  - whether Vault answers from this host (GET /v1/sys/health: any HTTP answer, sealed or
    standby included, means reachable; its status code is exported too).
GET /metrics/<name> relays a local endpoint that listens on loopback only (fireactions' metrics,
the scaler's), so one port opened to the scrape sources serves all of them.

Collecting is a function of a root directory and a systemctl program; rendering is pure. A
scrape never fails because one fact cannot be read: that fact is absent or 0.
"""

import argparse
import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PROFILE = "nix/var/nix/profiles/system"
CURRENT = "run/current-system"
BOOTED = "run/booted-system"
# switch-to-configuration and the deploy's reboot rule compare these three links.
BOOT_PARTS = ("kernel", "initrd", "kernel-modules")
GENERATION = re.compile(r"^system-(\d+)-link$")


def log(msg):
    print(f"runner-fleet-exporter: {msg}", file=sys.stderr, flush=True)


# ---- collecting ------------------------------------------------------------------------

def _real(path):
    try:
        return os.path.realpath(path, strict=True)
    except OSError:
        return None


def nixos_facts(root):
    """The system profile, current and booted systems under root."""
    profile = os.path.join(root, PROFILE)
    profiles_dir = os.path.dirname(profile)
    generations = {}
    try:
        for entry in os.listdir(profiles_dir):
            m = GENERATION.match(entry)
            target = m and _real(os.path.join(profiles_dir, entry))
            if target:
                generations[target] = int(m.group(1))
    except OSError:
        pass
    try:
        m = GENERATION.match(os.readlink(profile))
        profile_gen = int(m.group(1)) if m else 0
    except OSError:
        profile_gen = 0
    systems = {"current": _real(os.path.join(root, CURRENT)), "booted": _real(os.path.join(root, BOOTED)),
               "profile": _real(profile)}
    try:
        switched = os.lstat(os.path.join(root, CURRENT)).st_mtime
    except OSError:
        switched = None
    reboot = False
    if systems["booted"] and systems["profile"]:
        reboot = any(_real(os.path.join(systems["booted"], p)) != _real(os.path.join(systems["profile"], p))
                     for p in BOOT_PARTS)
    return {
        "systems": systems,
        "generations": {"current": generations.get(systems["current"], 0),
                        "boot": generations.get(systems["booted"], 0), "profile": profile_gen},
        "test_active": bool(systems["current"] and systems["profile"] and systems["current"] != systems["profile"]),
        "reboot_pending": reboot,
        "last_switch": switched,
    }


def secret_facts(root, files):
    out = {}
    for f in files:
        try:
            st = os.stat(os.path.join(root, f.lstrip("/")))
            out[f] = {"present": st.st_size > 0, "modified": st.st_mtime}
        except OSError:
            out[f] = {"present": False, "modified": None}
    return out


def unit_facts(systemctl, units):
    """ActiveState of each unit (one systemctl call); unknown when systemctl cannot answer."""
    if not units:
        return {}
    try:
        r = subprocess.run([systemctl, "show", "--property=Id,ActiveState", "--", *units],
                           capture_output=True, text=True, timeout=5)
        blocks = r.stdout.strip().split("\n\n") if r.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        blocks = []
    states = {}
    for block in blocks:
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            states[fields["Id"]] = fields.get("ActiveState", "unknown")
    # systemctl names a unit given without a suffix by its full Id (name.service).
    return {u: states.get(u, states.get(f"{u}.service", "unknown")) for u in units}


def vault_facts(vault):
    """{"reachable", "status"} for {"address", "caFile"?}; None when no Vault is configured."""
    if not vault or not vault.get("address"):
        return None
    url = vault["address"].rstrip("/") + "/v1/sys/health?standbyok=true&perfstandbyok=true"
    ctx = ssl.create_default_context(cafile=vault.get("caFile") or None)
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
            return {"reachable": True, "status": r.status}
    except urllib.error.HTTPError as e:
        return {"reachable": True, "status": e.code}
    except (OSError, ValueError):
        return {"reachable": False, "status": 0}


# ---- rendering -------------------------------------------------------------------------

def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs):
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs) + "}" if pairs else ""


def render(facts):
    """Prometheus text format for the facts collect() returns."""
    out = []

    def metric(name, kind, help_text, samples):
        out.append(f"# HELP runner_fleet_{name} {help_text}")
        out.append(f"# TYPE runner_fleet_{name} {kind}")
        for labels, value in samples:
            out.append(f"runner_fleet_{name}{_labels(labels)} {value!r}" if isinstance(value, float)
                       else f"runner_fleet_{name}{_labels(labels)} {int(value)}")

    nixos = facts["nixos"]
    gens = nixos["generations"]
    metric("nixos_current_generation", "gauge", "Generation of the system profile that is running (0: none, e.g. a test activation)", [((), gens["current"])])
    metric("nixos_boot_generation", "gauge", "Generation of the system profile that was booted (0: none)", [((), gens["boot"])])
    metric("nixos_profile_generation", "gauge", "Generation the system profile points at: what the next boot starts", [((), gens["profile"])])
    sys_ = nixos["systems"]
    metric("nixos_system_info", "gauge", "Store paths of the running, booted and profile systems",
           [((("current", sys_["current"] or ""), ("booted", sys_["booted"] or ""), ("profile", sys_["profile"] or "")), 1)])
    metric("nixos_test_active", "gauge", "1 while the running system is not the profile's (a test activation; a reboot reverts it)", [((), nixos["test_active"])])
    metric("nixos_reboot_pending", "gauge", "1 when the profile's kernel, initrd or modules differ from the booted system's", [((), nixos["reboot_pending"])])
    if nixos["last_switch"] is not None:
        metric("nixos_last_switch_timestamp_seconds", "gauge", "When /run/current-system last changed (the last switch or test activation)", [((), float(nixos["last_switch"]))])

    secrets = facts["secrets"]
    metric("secrets_satisfied", "gauge", "1 when every secret file vault-agent renders is present and non-empty (runner-fleet-secrets' condition)",
           [((), all(s["present"] for s in secrets.values()))])
    metric("secret_present", "gauge", "1 when the secret file is present and non-empty", [((("file", f),), s["present"]) for f, s in sorted(secrets.items())])
    metric("secret_modified_timestamp_seconds", "gauge", "When vault-agent last wrote the secret file",
           [((("file", f),), float(s["modified"])) for f, s in sorted(secrets.items()) if s["modified"] is not None])

    units = facts["units"]
    metric("unit_active", "gauge", "1 when the systemd unit is active", [((("unit", u),), st == "active") for u, st in sorted(units.items())])
    metric("unit_state", "gauge", "The unit's ActiveState, as a label", [((("unit", u), ("state", st)), 1) for u, st in sorted(units.items())])

    vault = facts.get("vault")
    if vault is not None:
        metric("vault_reachable", "gauge", "1 when Vault answered GET /v1/sys/health from this host (any status)", [((), vault["reachable"])])
        metric("vault_health_status_code", "gauge", "HTTP status of Vault's /v1/sys/health (200 active or standby, 501 not initialised, 503 sealed; 0 no answer)", [((), vault["status"])])

    relays = facts.get("relays", {})
    metric("relay_up", "gauge", "1 when the last relay of the local metrics endpoint answered", [((("source", n),), bool(up)) for n, up in sorted(relays.items())])
    return "\n".join(out) + "\n"


# ---- wiring ----------------------------------------------------------------------------

class Exporter:
    def __init__(self, args):
        self.root = args.root
        self.systemctl = args.systemctl
        with open(args.config, encoding="utf-8") as f:
            cfg = json.load(f)
        self.secrets = list(cfg.get("secrets", []))
        self.units = list(cfg.get("units", []))
        self.relays = dict(cfg.get("relays", {}))
        self.vault = cfg.get("vault")
        # None until the first relay: its first answer (or failure) is logged.
        self.relay_up = {name: None for name in self.relays}
        self.lock = threading.Lock()

    def metrics(self):
        facts = {"nixos": nixos_facts(self.root), "secrets": secret_facts(self.root, self.secrets),
                 "units": unit_facts(self.systemctl, self.units), "vault": vault_facts(self.vault)}
        with self.lock:
            facts["relays"] = dict(self.relay_up)
        return render(facts)

    def relay(self, name):
        """(status, body) of the local endpoint; one log line when it starts or stops answering."""
        try:
            with urllib.request.urlopen(self.relays[name], timeout=5) as r:
                body, up = r.read(), True
        except (OSError, ValueError) as e:
            body, up = f"{name}: {self.relays[name]}: {e}\n".encode(), False
        with self.lock:
            if up != self.relay_up[name]:
                log(f"relay {name} ({self.relays[name]}) {'answers' if up else 'does not answer: ' + body.decode().strip()}")
            self.relay_up[name] = up
        return (200 if up else 502), body


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        exporter = self.server.exporter
        if path == "/metrics":
            status, body = 200, exporter.metrics().encode()
        elif path.startswith("/metrics/") and path[len("/metrics/"):] in exporter.relays:
            status, body = exporter.relay(path[len("/metrics/"):])
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def split_address(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def serve(exporter, address):
    """Binds, retrying with one log line per failure: the address may not be up yet at boot."""
    delay = 1.0
    while True:
        try:
            server = http.server.ThreadingHTTPServer(split_address(address), Handler)
            break
        except OSError as e:
            log(f"listen {address}: {e.strerror or e}; retrying in {delay:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    server.exporter = exporter
    log(f"metrics on http://{address}/metrics")
    server.serve_forever()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="host:port to serve on")
    p.add_argument("--config", required=True, help='JSON: {"secrets": [files], "units": [units], "relays": {name: url}, "vault": {"address": url, "caFile": path}}')
    p.add_argument("--root", default="/", help="where /nix/var/nix/profiles and /run are (tests)")
    p.add_argument("--systemctl", default="systemctl")
    args = p.parse_args(argv)
    try:
        split_address(args.listen)
        exporter = Exporter(args)
    except (OSError, ValueError) as e:
        log(f"cannot start: {e}")
        return 1
    serve(exporter, args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
