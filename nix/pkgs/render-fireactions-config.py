#!/usr/bin/env python3
"""Render the fireactions v0.4 config from the host's pools.json and secrets.

Inputs are the contract files (/etc/runner-fleet/pools.json, written by
cloud-init or runner-fleet-apply-pools) and the files vault-agent renders into
/run/secrets. The output holds the GitHub App key, so it goes to /run (tmpfs,
never the Nix store) with mode 0640, written atomically so fireactions never
reads half a file.

The output is JSON: every JSON document is valid YAML, and fireactions reads
YAML. That keeps this script stdlib-only and free of YAML quoting pitfalls.

`--check` only validates pools.json (used before installing a new one).
"""

import argparse
import json
import os
import sys
import tempfile

POOL_KEYS = {"name", "maxRunners", "minRunners", "runner", "firecracker"}
RUNNER_KEYS = {"name", "image", "imagePullPolicy", "organization", "labels", "groupId"}
FIRECRACKER_KEYS = {"vcpuCount", "memSizeMib", "kernelArgs"}
PULL_POLICIES = {"Always", "Never", "IfNotPresent"}


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
    seen = set()
    for i, pool in enumerate(pools):
        at = f"[{i}]"
        _require(isinstance(pool, dict), at, "must be an object")
        missing = POOL_KEYS - pool.keys()
        _require(not missing, at, f"missing {', '.join(sorted(missing))}")
        _non_empty_str(pool["name"], f"{at}.name")
        _require(pool["name"] not in seen, f"{at}.name", f"duplicate pool {pool['name']!r}")
        seen.add(pool["name"])
        _positive_int(pool["maxRunners"], f"{at}.maxRunners")
        _positive_int(pool["minRunners"], f"{at}.minRunners", allow_zero=True)
        _require(pool["minRunners"] <= pool["maxRunners"], f"{at}.minRunners", "exceeds maxRunners")

        runner = pool["runner"]
        _require(isinstance(runner, dict), f"{at}.runner", "must be an object")
        missing = (RUNNER_KEYS - {"groupId"}) - runner.keys()
        _require(not missing, f"{at}.runner", f"missing {', '.join(sorted(missing))}")
        for key in ("name", "image", "organization"):
            _non_empty_str(runner[key], f"{at}.runner.{key}")
        _require(runner["imagePullPolicy"] in PULL_POLICIES, f"{at}.runner.imagePullPolicy",
                 "must be one of " + ", ".join(sorted(PULL_POLICIES)))
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


def render_pool(pool, host):
    runner = pool["runner"]
    fc = pool["firecracker"]
    out_runner = {
        "name": runner["name"],
        "image": runner["image"],
        "image_pull_policy": runner["imagePullPolicy"],
        "organization": runner["organization"],
        "labels": list(runner["labels"]),
    }
    if runner.get("groupId") is not None:
        out_runner["group_id"] = runner["groupId"]
    return {
        "name": pool["name"],
        "max_runners": pool["maxRunners"],
        "min_runners": pool["minRunners"],
        "runner": out_runner,
        "firecracker": {
            "binary_path": host["firecracker"],
            "kernel_image_path": host["kernel"],
            "kernel_args": fc["kernelArgs"],
            "cni_conf_dir": host["cni_conf_dir"],
            "cni_bin_dirs": list(host["cni_bin_dirs"]),
            "machine_config": {
                "vcpu_count": fc["vcpuCount"],
                "mem_size_mib": fc["memSizeMib"],
            },
        },
    }


def render_config(pools, app_id, app_key, host):
    """The fireactions v0.4 config as a dict (key order is kept in the output)."""
    return {
        "bind_address": host["bind_address"],
        "log_level": host["log_level"],
        "debug": False,
        "metrics": {"enabled": True, "address": host["metrics_address"]},
        "basic_auth_enabled": False,
        "github": {"app_id": app_id, "app_private_key": app_key},
        "pools": [render_pool(p, host) for p in sorted(pools, key=lambda p: p["name"])],
    }


def read_app_id(path):
    text = open(path, encoding="utf-8").read().strip()
    if not text.isdigit():
        raise PoolsError(f"{path}: GitHub App id must be a number")
    return int(text)


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
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d")
    p.add_argument("--cni-bin-dir", action="append", default=[], help="repeatable")
    p.add_argument("--bind-address", default="127.0.0.1:8080")
    p.add_argument("--metrics-address", default="127.0.0.1:8081")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
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
        host = {
            "firecracker": args.firecracker,
            "kernel": args.kernel,
            "cni_conf_dir": args.cni_conf_dir,
            "cni_bin_dirs": args.cni_bin_dir or ["/opt/cni/bin"],
            "bind_address": args.bind_address,
            "metrics_address": args.metrics_address,
            "log_level": args.log_level,
        }
        config = render_config(pools, read_app_id(args.app_id_file), read_app_key(args.app_key_file), host)
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
