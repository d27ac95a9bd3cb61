"""Render the fireactions v0.4 config from the host's pools.json and secrets.

Inputs are the contract files (/etc/runner-fleet/pools.json, written by
cloud-init or runner-fleet-apply-pools) and the files vault-agent renders into
/run/secrets. The output holds the GitHub App key, so it goes to /run (tmpfs,
never the Nix store) with mode 0640, written atomically so fireactions never
reads half a file.

The output is JSON: every JSON document is valid YAML, and fireactions reads
YAML. That keeps this script stdlib-only and free of YAML quoting pitfalls.

`--check` only validates pools.json (used before installing a new one).

What fireactions v0.4.0 itself does with this file (server/config.go, server/pool.go):
- Config.Validate checks only the top level (bind_address, log_level, github, and pools
  `required,min=1`): the pools slice has no `dive`, so the tags on each pool are never
  checked. This renderer checks them instead, and refuses what v0.4.0 would refuse or
  silently mishandle, before the daemon starts.
- min_runners: the pool only tops itself up to it (Pool.Start), so 0 never starts a runner;
  its tag says min=1.
- group_id: sent as RunnerGroupID as is; absent means 0, not GitHub's default group 1.
- image_pull_policy: never read (scaleUp pulls only when containerd lacks the image). Its tag
  requires one of always/never/ifnotpresent, so we write the one that describes what happens.
- firecracker.metadata: scaleUp copies it into MMDS under latest/meta-data/ next to its own
  `fireactions` key (runner_id, runner_jit_config). `--vm-metadata FILE` (the registry mirror's
  VM configs, #23) goes there as `runner_fleet.registry_mirror`, the same in every pool.
- basic auth (`--api-password-file`): with basic_auth_enabled, New puts gin.BasicAuth in front
  of every /api route (server/server.go l.104-107; /healthz, /version and the metrics listener
  stay open). The accounts are read once there: Reload re-reads the file but never rebuilds the
  middleware, so the password cannot change without a restart. The user is API_USER. v0.4.0's
  `required_if=basic_auth_enabled true` never fires (it names a yaml key, not the Go field), and
  gin panics at start on an empty account list, so the renderer refuses a missing or empty file.
- CNI: the conf dir /etc/cni/net.d and bin dir /opt/cni/bin are hard-coded in scaleUp, and
  yaml.v3 drops unknown keys, so the config carries no CNI settings; the NixOS role puts the
  plugins at /opt/cni/bin.
"""

import argparse
import json
import os
import re
import sys
import tempfile

POOL_KEYS = {"name", "maxRunners", "minRunners", "runner", "firecracker"}
RUNNER_KEYS = {"name", "image", "organization", "labels"}
FIRECRACKER_KEYS = {"vcpuCount", "memSizeMib", "kernelArgs"}
# GitHub's default runner group (fireactions v0.4.0 docs/user-guide/configuration.md).
DEFAULT_GROUP_ID = 1
# The only value that describes v0.4.0's behaviour (see the module docstring).
IMAGE_PULL_POLICY = "ifnotpresent"
LOG_LEVELS = ("debug", "info", "warn", "error")
# Pool names become containerd namespaces and directory names; runner-fleet's host/pool name rule.
POOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The scaler (runner-fleet-scaler.py) reads the Actions runner's lines from each VM's console
# log. Runner images log the runner to the guest's journal, which journald forwards to the
# console only when asked; the kernel command line asks (docs/upstream.md, #20).
JOURNAL_TO_CONSOLE = "systemd.journald.forward_to_console=1"
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$")
# The one basic-auth account of fireactions' API; runner-fleet-drain and -scaler log in as it.
API_USER = "runner-fleet"
# One line of printable ASCII without spaces: what the per-boot generator writes, and what a
# curl netrc or -K file can carry unquoted.
API_PASSWORD = re.compile(r"[\x21-\x7e]{16,256}")


class PoolsError(Exception):
    pass


def _require(cond, where, msg):
    if not cond:
        raise PoolsError(f"{where}: {msg}")


def _positive_int(value, where, allow_zero=False):
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    _require(ok, where, "must be a " + ("non-negative" if allow_zero else "positive") + " integer")


def _non_empty_str(value, where):
    _require(isinstance(value, str) and value != "", where, "must be a non-empty string")


def validate_pools(pools):
    """Raise PoolsError naming the first bad key path; return the pools."""
    _require(isinstance(pools, list), "pools.json", "must be a JSON array")
    # fireactions v0.4.0 refuses an empty pool list (`pools` is `required,min=1`).
    _require(len(pools) > 0, "pools.json", "must list at least one pool (fireactions needs one)")
    seen = set()
    for i, pool in enumerate(pools):
        at = f"[{i}]"
        _require(isinstance(pool, dict), at, "must be an object")
        missing = POOL_KEYS - pool.keys()
        _require(not missing, at, f"missing {', '.join(sorted(missing))}")
        _non_empty_str(pool["name"], f"{at}.name")
        _require(POOL_NAME.match(pool["name"]) is not None, f"{at}.name",
                 "must be lowercase letters, digits and dashes (1-63 characters)")
        _require(pool["name"] not in seen, f"{at}.name", f"duplicate pool {pool['name']!r}")
        seen.add(pool["name"])
        _positive_int(pool["maxRunners"], f"{at}.maxRunners")
        # 0 would never start a runner: v0.4.0 only tops a pool up to its minimum.
        _positive_int(pool["minRunners"], f"{at}.minRunners")
        _require(pool["minRunners"] <= pool["maxRunners"], f"{at}.minRunners", "exceeds maxRunners")

        runner = pool["runner"]
        _require(isinstance(runner, dict), f"{at}.runner", "must be an object")
        missing = RUNNER_KEYS - runner.keys()
        _require(not missing, f"{at}.runner", f"missing {', '.join(sorted(missing))}")
        for key in ("name", "image", "organization"):
            _non_empty_str(runner[key], f"{at}.runner.{key}")
        labels = runner["labels"]
        _require(isinstance(labels, list) and labels and all(isinstance(label, str) and label for label in labels),
                 f"{at}.runner.labels", "must be a non-empty list of strings")
        if runner.get("groupId") is not None:
            _positive_int(runner["groupId"], f"{at}.runner.groupId")

        fc = pool["firecracker"]
        _require(isinstance(fc, dict), f"{at}.firecracker", "must be an object")
        missing = FIRECRACKER_KEYS - fc.keys()
        _require(not missing, f"{at}.firecracker", f"missing {', '.join(sorted(missing))}")
        _positive_int(fc["vcpuCount"], f"{at}.firecracker.vcpuCount")
        _positive_int(fc["memSizeMib"], f"{at}.firecracker.memSizeMib")
        _require(isinstance(fc["kernelArgs"], str), f"{at}.firecracker.kernelArgs", "must be a string")
    return pools


def with_journal_on_console(kernel_args):
    if any(a.startswith("systemd.journald.forward_to_console") for a in kernel_args.split()):
        return kernel_args
    return f"{kernel_args} {JOURNAL_TO_CONSOLE}".strip()


def render_pool(pool, host, vm_metadata=None):
    runner = pool["runner"]
    fc = pool["firecracker"]
    # An imagePullPolicy left in an older pools.json is ignored: v0.4.0 never reads it.
    out_runner = {
        "name": runner["name"],
        "image": runner["image"],
        "image_pull_policy": IMAGE_PULL_POLICY,
        "organization": runner["organization"],
        "group_id": runner.get("groupId") or DEFAULT_GROUP_ID,
        "labels": list(runner["labels"]),
    }
    return {
        "name": pool["name"],
        "max_runners": pool["maxRunners"],
        "min_runners": pool["minRunners"],
        "runner": out_runner,
        "firecracker": {
            "binary_path": host["firecracker"],
            "kernel_image_path": host["kernel"],
            "kernel_args": with_journal_on_console(fc["kernelArgs"]),
            "machine_config": {
                "vcpu_count": fc["vcpuCount"],
                "mem_size_mib": fc["memSizeMib"],
            },
            **({"metadata": {"runner_fleet": {"registry_mirror": vm_metadata}}} if vm_metadata is not None else {}),
        },
    }


def render_config(pools, app_id, app_key, host, vm_metadata=None, api_password=None):
    """The fireactions v0.4 config as a dict (key order is kept in the output). With
    api_password the API (/api/...) asks for basic auth as API_USER."""
    auth = {"basic_auth_enabled": False}
    if api_password is not None:
        auth = {"basic_auth_enabled": True, "basic_auth_users": {API_USER: api_password}}
    return {
        "bind_address": host["bind_address"],
        "log_level": host["log_level"],
        "debug": False,
        "metrics": {"enabled": True, "address": host["metrics_address"]},
        **auth,
        "github": {"app_id": app_id, "app_private_key": app_key},
        "pools": [render_pool(p, host, vm_metadata) for p in sorted(pools, key=lambda p: p["name"])],
    }


def read_app_id(path):
    text = open(path, encoding="utf-8").read().strip()
    # `required` on an int64: fireactions refuses 0 too.
    if not text.isdigit() or int(text) == 0:
        raise PoolsError(f"{path}: GitHub App id must be a positive number")
    return int(text)


def read_api_password(path):
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise PoolsError(f"{path}: missing (the fireactions API password; runner-fleet-api-password.service writes it)")
    except UnicodeDecodeError:
        text = None
    password = text[:-1] if text and text.endswith("\n") else text
    if not password:
        raise PoolsError(f"{path}: empty (the fireactions API password; gin refuses an account without one)")
    if API_PASSWORD.fullmatch(password) is None:
        raise PoolsError(f"{path}: must be one line of 16 to 256 printable ASCII characters without spaces")
    return password


def check_host_port(value, flag):
    """fireactions validates bind_address and metrics.address as `hostname_port`."""
    m = HOST_PORT.match(value)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise PoolsError(f"{flag}: {value!r} is not host:port")


def read_app_key(path):
    text = open(path, encoding="utf-8").read()
    if "PRIVATE KEY" not in text:
        raise PoolsError(f"{path}: not a PEM private key")
    return text if text.endswith("\n") else text + "\n"


def write_atomic(path, text, mode):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", default="/etc/runner-fleet/pools.json", help="'-' reads stdin")
    p.add_argument("--check", action="store_true", help="validate pools.json and exit")
    p.add_argument("--app-id-file", default="/run/secrets/github-app-id")
    p.add_argument("--app-key-file", default="/run/secrets/github-app-key.pem")
    p.add_argument("--out", default="/run/fireactions/config.yaml", help="'-' writes stdout")
    p.add_argument("--mode", default="0640", help="octal file mode of --out")
    p.add_argument("--firecracker", default="firecracker")
    p.add_argument("--kernel", default="/var/lib/fireactions/vmlinux")
    p.add_argument("--bind-address", default="127.0.0.1:8080")
    p.add_argument("--metrics-address", default="127.0.0.1:8081")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--vm-metadata", help="JSON object put into every pool's MMDS metadata as runner_fleet.registry_mirror")
    p.add_argument("--api-password-file", help=f"turns on the API's basic auth: user {API_USER!r}, this file's password (one line)")
    args = p.parse_args(argv)

    try:
        source = sys.stdin if args.pools == "-" else open(args.pools, encoding="utf-8")
        with source:
            try:
                pools = json.load(source)
            except json.JSONDecodeError as e:
                raise PoolsError(f"pools.json: not valid JSON ({e})")
        validate_pools(pools)
        if args.check:
            return 0
        check_host_port(args.bind_address, "--bind-address")
        check_host_port(args.metrics_address, "--metrics-address")
        host = {
            "firecracker": args.firecracker,
            "kernel": args.kernel,
            "bind_address": args.bind_address,
            "metrics_address": args.metrics_address,
            "log_level": args.log_level,
        }
        vm_metadata = None
        if args.vm_metadata:
            with open(args.vm_metadata, encoding="utf-8") as f:
                try:
                    vm_metadata = json.load(f)
                except json.JSONDecodeError as e:
                    raise PoolsError(f"--vm-metadata: not valid JSON ({e})")
            _require(isinstance(vm_metadata, dict), "--vm-metadata", "must be a JSON object")
        api_password = read_api_password(args.api_password_file) if args.api_password_file else None
        config = render_config(pools, read_app_id(args.app_id_file), read_app_key(args.app_key_file), host, vm_metadata,
                               api_password)
    except (PoolsError, OSError) as e:
        print(f"render-fireactions-config: {e}", file=sys.stderr)
        return 1

    text = json.dumps(config, indent=2) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text, int(args.mode, 8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
