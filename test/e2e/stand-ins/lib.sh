# Shared by the deploy-side STAND-INS (deploy, colmena, nixos-anywhere): the real tools need
# nixpkgs, which cannot be reached here. Sourced, not run.
#
# standin_record TOOL ARGS...   appends {tool, argv, stdin, cwd, inventory} as one JSON line
#                               to $RF_E2E_STANDIN_LOG (default /tmp/rf-e2e/stand-ins.log)
# standin_activate FLAKE HOST ADDRESS USER [switch|boot|test]
#                               builds the host's "system" from FLAKE (host/system.nix: the
#                               host programs and vault-agent config of nix/modules) for the
#                               inventory in $RUNNER_FLEET_INVENTORY, sends it over SSH and runs
#                               the activate-rs stand-in through the deploy user's sudo rule.
# standin_toplevel FLAKE HOST   prints the store path that system gets on the host
#                               (/nix/store/<hash of the system and the inventory>-nixos-system-HOST): what the
#                               nix stand-in answers for the host's toplevel.
#
# Kernel, initrd and kernel modules: every system the stand-ins build has the same three
# (STANDIN_KERNEL_LINKS; NixOS links them as <toplevel>/kernel, /initrd, /kernel-modules), and the
# nix stand-in answers the reboot check with them. A test that wants a reboot wave points the
# host's /run/booted-system at a system with other ones.
#
# The fireactions unit: on fireactions hosts the system carries a fireactions.service whose text
# stands for what the real unit refers to (the runner-fleet-drain and render-fireactions-config
# programs of its ExecReload and preStart) plus the content of $RF_E2E_DIR/fireactions-unit when
# a test wrote one (a new fireactions package, say). It changes only when those do, as a NixOS
# unit's store path does; restartIfChanged = false keeps activation from restarting it.

STANDIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STANDIN_HOST_DIR="$STANDIN_DIR/../host"
STANDIN_ACTIVATE=/nix/store/00000000000000000000000000000000-runner-fleet-e2e-activate/activate-rs
STANDIN_SSH_EXTRA=()
STANDIN_KERNEL_LINKS="/nix/store/00000000000000000000000000000000-stand-in-kernel/bzImage /nix/store/00000000000000000000000000000000-stand-in-initrd/initrd /nix/store/00000000000000000000000000000000-stand-in-modules"
STANDIN_UNIT_KNOB="${RF_E2E_DIR:-/tmp/rf-e2e}/fireactions-unit"
STANDIN_SSH=(-o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)

standin_record() {
  local tool=$1; shift
  local stdin=""
  if [ ! -t 0 ]; then stdin=$(cat); fi
  python3 - "$tool" "${RUNNER_FLEET_INVENTORY:-}" "$stdin" "$@" >> "${RF_E2E_STANDIN_LOG:-/tmp/rf-e2e/stand-ins.log}" <<'PY'
import json, os, sys, time
tool, inv, stdin, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
inventory = open(inv).read() if inv and os.path.exists(inv) else None
print(json.dumps({"time": time.time(), "tool": tool, "argv": argv, "stdin": stdin, "cwd": os.getcwd(), "inventory": inventory}))
PY
}

standin_system_json() {
  local flake=$1 host=$2 out=$3
  [ -n "${RUNNER_FLEET_INVENTORY:-}" ] && [ -s "$RUNNER_FLEET_INVENTORY" ] || { echo "stand-in: RUNNER_FLEET_INVENTORY is not set" >&2; return 1; }
  NIX_REMOTE=dummy:// HOME="$(dirname "$out")" NIX_CONFIG="" nix-instantiate --eval --strict --json \
    --argstr flake "$flake" --argstr inventoryFile "$RUNNER_FLEET_INVENTORY" --argstr host "$host" \
    "$STANDIN_HOST_DIR/system.nix" > "$out" || { echo "stand-in: evaluating $host's system failed" >&2; return 1; }
}

standin_toplevel() {
  local flake host=$2 work
  flake=$(cd "$1" && pwd -P)
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  standin_system_json "$flake" "$host" "$work/system.json" || return 1
  echo "/nix/store/$(standin_system_hash "$work/system.json")-nixos-system-$host"
}

# The toplevel's hash: the system, the inventory and the fireactions unit knob (when set).
standin_system_hash() {
  { cat "$1" "$RUNNER_FLEET_INVENTORY"; if [ -s "$STANDIN_UNIT_KNOB" ]; then cat "$STANDIN_UNIT_KNOB"; fi; } | sha256sum | cut -c1-32
}

standin_activate() {
  # STANDIN_SSH_EXTRA (an array, may be empty) comes first: ssh keeps the first value of an option,
  # so a caller's pinned host key wins over the defaults here.
  local flake host=$2 address=$3 user=$4 mode=${5:-switch} work toplevel
  flake=$(cd "$1" && pwd -P)
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  standin_system_json "$flake" "$host" "$work/system.json" || return 1
  # A real system changes with its inventory entry too (tags, roles...): so does this path.
  toplevel="/nix/store/$(standin_system_hash "$work/system.json")-nixos-system-$host"
  python3 - "$work/system.json" "$work/system" "$STANDIN_KERNEL_LINKS" "$STANDIN_UNIT_KNOB" <<'PY' || return 1
import json, os, sys
system = json.load(open(sys.argv[1]))
out = sys.argv[2]
os.makedirs(f"{out}/bin")
os.makedirs(f"{out}/etc/vault-agent")
os.makedirs(f"{out}/etc/runner-fleet-e2e/units")
# What nixpkgs' writeShellApplication and writers.writePython3Bin put before the text
# (the interpreter here is Debian's; PATH holds the system's programs first).
preamble = {
    "shell": '#!/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\nexport PATH="/run/current-system/sw/bin:$PATH"\n\n',
    "python3": "#!/usr/bin/python3\n",
}
for p in system["programs"]:
    with open(f"{out}/bin/{p['name']}", "w") as f:
        f.write(preamble[p["kind"]] + p["text"])
with open(f"{out}/etc/vault-agent/runner-fleet.json", "w") as f:
    json.dump(system["vaultAgent"], f, indent=2, sort_keys=True)
# Files the modules put in /etc (environment.etc), under etc/files/<path>.
for rel, text in system.get("etc", {}).items():
    os.makedirs(os.path.dirname(f"{out}/etc/files/{rel}"), exist_ok=True)
    with open(f"{out}/etc/files/{rel}", "w") as f:
        f.write(text)
# The services host/systemctl runs (their unit settings, as JSON).
for name, unit in system.get("units", {}).items():
    with open(f"{out}/etc/runner-fleet-e2e/units/{name}.json", "w") as f:
        json.dump(unit, f, indent=2, sort_keys=True)
# kernel, initrd, kernel-modules (lib.sh STANDIN_KERNEL_LINKS), one "name target" a line.
with open(f"{out}/etc/kernel-links", "w") as f:
    for name, target in zip(["kernel", "initrd", "kernel-modules"], sys.argv[3].split()):
        f.write(f"{name} {target}\n")
# The fireactions unit (fireactions hosts: those with the scaler): see lib.sh's header.
if "runner-fleet-scaler" in system.get("units", {}):
    import hashlib
    refs = {p["name"]: hashlib.sha256(p["text"].encode()).hexdigest() for p in system["programs"]
            if p["name"] in ("runner-fleet-drain", "render-fireactions-config")}
    knob = open(sys.argv[4]).read().strip() if os.path.exists(sys.argv[4]) else ""
    os.makedirs(f"{out}/etc/systemd/system")
    with open(f"{out}/etc/systemd/system/fireactions.service", "w") as f:
        f.write("# STAND-IN fireactions unit (test/e2e/stand-ins/lib.sh)\n[Unit]\nX-RestartIfChanged=false\n")
        f.write("".join(f"X-Uses={n} {h}\n" for n, h in sorted(refs.items())))
        if knob:
            f.write(f"X-Stand-In-Version={knob}\n")
PY
  tar -C "$work/system" -cf "$work/system.tar" bin etc
  ssh ${STANDIN_SSH_EXTRA[@]+"${STANDIN_SSH_EXTRA[@]}"} "${STANDIN_SSH[@]}" "$user@$address" "sudo -n $STANDIN_ACTIVATE activate $host $toplevel $mode" < "$work/system.tar"
}
