"""The registry pull-through mirror on fireactions hosts: configs, as files.

One distribution registry (Debian/nixpkgs `docker-registry`, distribution v2.8) per upstream:
distribution's `proxy` section takes exactly one `remoteurl` (configuration/configuration.go
`type Proxy struct`, registry/handlers/app.go), so docker.io, ghcr.io, quay.io and gcr.io each get
their own instance, port and storage directory. The input is one JSON document (written by
nix/modules/registry-mirror.nix from the host's inventory entry):

  {"listen": "10.200.0.1", "storageDir": "/var/lib/runner-fleet/registry-mirror",
   "credentialsDir": "/run/secrets/registry-mirror",
   "upstreams": {"docker.io": {"url": "https://registry-1.docker.io", "port": 5001,
                               "credentials": true}, ...}}

`credentials: true`: the upstream needs a login, so its username/password files must be there.

Commands (pure rendering; only `registry --out FILE` and `prune` touch the disk):
- registry NAME: the distribution config for upstream NAME, as JSON (valid YAML, which the
  registry reads). Credentials, when vault-agent wrote `<credentialsDir>/<NAME>/username` and
  `.../password`, go into the file only, never argv or env: the file is 0600 under /run.
- vm: what runner VMs need to pull through the mirrors with no workflow change: containerd
  `certs.d/<upstream>/hosts.toml`, BuildKit `buildkitd.toml` and Docker `daemon.json`, as
  {"files": {path: text}}; render-fireactions-config puts it into every pool's MMDS metadata.
- over NAME --max-gib N: exit 0 when that upstream's storage exceeds N GiB, 3 when not.
- prune NAME --max-gib N: distribution has no cache size limit (it expires what it cached
  7 days after the last fetch, proxy/proxymanifeststore.go repositoryTTL). When the upstream's
  storage exceeds N GiB, empty it (the unit stops that registry first): a cache refills itself.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

# The same pattern as the stack's config (components/config-schema.ts RegistryHost): a port may follow.
UPSTREAM_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
LISTEN = re.compile(r"^[0-9.]{7,15}$")


class MirrorError(Exception):
    pass


def validate(cfg):
    """Raise MirrorError listing every problem at once; return cfg."""
    problems = []
    if not isinstance(cfg, dict):
        raise MirrorError("config: must be a JSON object")
    if not isinstance(cfg.get("listen"), str) or not LISTEN.match(cfg["listen"]):
        problems.append("listen: must be an IPv4 address (the VM bridge's gateway)")
    for key in ("storageDir", "credentialsDir"):
        if not isinstance(cfg.get(key), str) or not cfg[key].startswith("/"):
            problems.append(f"{key}: must be an absolute path")
    ups = cfg.get("upstreams")
    if not isinstance(ups, dict) or not ups:
        problems.append("upstreams: must name at least one upstream registry")
        ups = {}
    ports = {}
    for name, up in sorted(ups.items()):
        at = f"upstreams.{name}"
        if not UPSTREAM_NAME.match(name):
            problems.append(f"{at}: not a registry host name")
        if not isinstance(up, dict):
            problems.append(f"{at}: must be an object")
            continue
        url = up.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/@\s]+(/[^\s@]*)?$", url):
            problems.append(f"{at}.url: must be an http(s) URL without credentials")
        port = up.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
            problems.append(f"{at}.port: must be a port 1024-65535")
        elif port in ports:
            problems.append(f"{at}.port: {port} is already the port of {ports[port]}")
        else:
            ports[port] = name
        if "credentials" in up and not isinstance(up["credentials"], bool):
            problems.append(f"{at}.credentials: must be true or false")
    if problems:
        raise MirrorError("; ".join(problems))
    return cfg


def read_credentials(cfg, name):
    """(username, password) from vault-agent's files, or None when there are none."""
    base = os.path.join(cfg["credentialsDir"], name)
    user_file, pass_file = os.path.join(base, "username"), os.path.join(base, "password")
    if not os.path.exists(user_file) and not os.path.exists(pass_file):
        if cfg["upstreams"][name].get("credentials"):
            # Pulling anonymously instead would hit the limits the login is there to lift.
            raise MirrorError(f"credentials for {name}: {user_file} and {pass_file} are missing "
                              f"(vault-agent renders them from shared/registry-mirror/{name})")
        return None
    try:
        user = open(user_file, encoding="utf-8").read().strip()
        password = open(pass_file, encoding="utf-8").read().strip()
    except OSError as e:
        raise MirrorError(f"credentials for {name}: {e.strerror} ({e.filename})")
    if not user or not password:
        raise MirrorError(f"credentials for {name}: username and password must both be non-empty")
    return user, password


def render_registry(cfg, name, credentials=None):
    """distribution v2.8 config for one upstream (docs/configuration.md `proxy`, `storage`, `http`)."""
    up = cfg["upstreams"][name]
    proxy = {"remoteurl": up["url"]}
    if credentials:
        proxy["username"], proxy["password"] = credentials
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": os.path.join(cfg["storageDir"], name)},
            # The proxy's scheduler can only expire what it cached with delete on.
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        # The gateway only: the VMs' side of the host, nothing else.
        "http": {"addr": f"{cfg['listen']}:{up['port']}", "relativeurls": False, "draintimeout": "10s"},
        "proxy": proxy,
        "health": {"storagedriver": {"enabled": False}},
    }


def toml_str(s):
    # A TOML basic string takes JSON's escapes for what json.dumps emits (ASCII, \" \\ \uXXXX).
    return json.dumps(s, ensure_ascii=True)


def mirror_host(cfg, name):
    return f"{cfg['listen']}:{cfg['upstreams'][name]['port']}"


def render_vm(cfg):
    """The runner VM's mirror configs, keyed by the path they go to in the guest."""
    files = {}
    for name in sorted(cfg["upstreams"]):
        # containerd (docs/hosts.md): the mirror first, the upstream itself as the fallback.
        server = "https://registry-1.docker.io" if name == "docker.io" else f"https://{name}"
        files[f"/etc/containerd/certs.d/{name}/hosts.toml"] = (
            f"server = {toml_str(server)}\n\n"
            f"[host.{toml_str('http://' + mirror_host(cfg, name))}]\n"
            '  capabilities = ["pull", "resolve"]\n'
        )
    lines = []
    for name in sorted(cfg["upstreams"]):
        host = mirror_host(cfg, name)
        lines += [f"[registry.{toml_str(name)}]", f"  mirrors = [{toml_str(host)}]", ""]
        lines += [f"[registry.{toml_str(host)}]", "  http = true", ""]
    files["/etc/buildkit/buildkitd.toml"] = "\n".join(lines)
    # Docker's registry-mirrors apply to Docker Hub only; other registries go direct in dockerd.
    if "docker.io" in cfg["upstreams"]:
        files["/etc/docker/daemon.json"] = json.dumps(
            {"registry-mirrors": ["http://" + mirror_host(cfg, "docker.io")]}, indent=2) + "\n"
    return {"files": files}


def usage_bytes(path):
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                pass
    return total


def prune(cfg, name, max_gib):
    """Empty one upstream's cache when it is over max_gib; returns (used bytes, pruned?)."""
    root = os.path.join(cfg["storageDir"], name)
    used = usage_bytes(root)
    if used <= max_gib * 1024 ** 3:
        return used, False
    for entry in os.listdir(root):
        p = os.path.join(root, entry)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    return used, True


def write_atomic(path, text, mode):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".mirror-")
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
    p.add_argument("--config", required=True, help="the mirror's JSON config ('-' reads stdin)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("registry", help="distribution config for one upstream")
    r.add_argument("name")
    r.add_argument("--out", default="-")
    sub.add_parser("vm", help="the runner VMs' containerd, BuildKit and Docker configs")
    sub.add_parser("ports", help="the mirror ports, one a line")
    for cmd, what in (("over", "exit 0 when an upstream's cache is over --max-gib, else 3"),
                      ("prune", "empty an upstream's cache when over --max-gib")):
        pr = sub.add_parser(cmd, help=what)
        pr.add_argument("name")
        pr.add_argument("--max-gib", type=int, required=True)
    args = p.parse_args(argv)

    try:
        source = sys.stdin if args.config == "-" else open(args.config, encoding="utf-8")
        with source:
            try:
                cfg = validate(json.load(source))
            except json.JSONDecodeError as e:
                raise MirrorError(f"config: not valid JSON ({e})")
        if args.cmd in ("registry", "over", "prune") and args.name not in cfg["upstreams"]:
            raise MirrorError(f"{args.name}: not an upstream of this mirror")
        if args.cmd == "registry":
            text = json.dumps(render_registry(cfg, args.name, read_credentials(cfg, args.name)), indent=2) + "\n"
            if args.out == "-":
                sys.stdout.write(text)
            else:
                write_atomic(args.out, text, 0o600)
        elif args.cmd == "vm":
            sys.stdout.write(json.dumps(render_vm(cfg), indent=2, sort_keys=True) + "\n")
        elif args.cmd == "ports":
            sys.stdout.write("".join(f"{u['port']}\n" for _, u in sorted(cfg["upstreams"].items())))
        elif args.cmd == "over":
            used = usage_bytes(os.path.join(cfg["storageDir"], args.name))
            return 0 if used > args.max_gib * 1024 ** 3 else 3
        else:
            used, pruned = prune(cfg, args.name, args.max_gib)
            state = "emptied" if pruned else "kept"
            print(f"runner-fleet-registry-mirror: {args.name}: {used // 1024 ** 2} MiB used, limit {args.max_gib} GiB: {state}")
    except (MirrorError, OSError) as e:
        print(f"runner-fleet-registry-mirror: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
