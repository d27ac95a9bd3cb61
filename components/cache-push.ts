/**
 * Deploys fill the fleet cache: before a host's switch, `<host>-push-to-<cache>` builds its
 * system on the deploy machine and copies the closure to the first cache host's store (by name;
 * hosts ask every cache host, so one copy serves them all, and one step per host keeps the
 * deploy linear in hosts) (`nix copy`
 * over SSH as the deploy user, the cache's host key pinned). deploy-rs then copies the system
 * with --substitute-on-destination (docs/upstream.md), so the host fetches what the cache has
 * from the cache instead of from the deploy machine. The pushes of one wave run one after
 * another: the second finds the shared paths there already, so a wave of N hosts sends the
 * shared closure once instead of N times.
 *
 * Best effort: a cache that is down, unreachable or full never fails a deploy. The step prints
 * one line (and at most the last lines of nix's output, cut short) and exits 0; the host then
 * receives the closure from the deploy machine as before. Nothing secret is on its command line:
 * the inventory comes on stdin, the pinned key in the environment.
 */
import { local } from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { HOST_KEY_ENV, pinnedSshLines, shellQuote, type RemoteBuildSetting } from "./deploy-commands";
import type { FleetModel, HostModel } from "./model";

/** Lines of nix's output a push keeps (its log is otherwise per path). */
export const PUSH_LOG_LINES = 20;
/** Columns each kept line is cut to. */
export const PUSH_LOG_COLUMNS = 300;

export interface PushCommandArgs {
  host: string;
  arch: string;
  /** The cache host's name (the pinned key's alias) and address. */
  cache: string;
  cacheAddress: string;
  flake: string;
  sshUser: string;
  remoteBuild: RemoteBuildSetting;
  timeoutMinutes: number;
}

/**
 * The push script. It reads inventory.json on stdin (as the switch does: the flake evaluates
 * the host from it) and $RF_HOST_KEY (the cache host's pinned key).
 */
export function pushCommand(a: PushCommandArgs): string {
  const say = (text: string) => `echo ${shellQuote(`${a.host}: ${text}`)}`;
  const attr = `${a.flake}#nixosConfigurations."${a.host}".config.system.build.toplevel`;
  const store = `ssh://${a.sshUser}@${a.cache}`;
  const body = [
    "set -eu",
    "umask 077",
    ...pinnedSshLines(a.cache, a.cacheAddress),
    'cat > "$work/inventory.json"',
    'export RUNNER_FLEET_INVENTORY="$work/inventory.json"',
    // A system built on the host itself is not in this store: nothing to push from here.
    ...(a.remoteBuild === "always" ? ["exit 3"] : a.remoteBuild === "auto"
      ? ['here=$(uname -m); [ "$here" = arm64 ] && here=aarch64', `[ "$here" = ${a.arch} ] || exit 3`]
      : []),
    `toplevel=$(timeout ${a.timeoutMinutes}m nix build --no-link --print-out-paths --impure ${shellQuote(attr)} 2>"$work/log") || exit 4`,
    `NIX_SSHOPTS="$ssh_opts" timeout ${a.timeoutMinutes}m nix copy --to ${shellQuote(store)} "$toplevel" >"$work/log" 2>&1 || exit 5`,
  ];
  return [
    "set -u",
    'work=$(mktemp -d)',
    'trap \'rm -rf "$work"\' EXIT',
    'rc=0',
    `( ${body.join("\n")}\n) || rc=$?`,
    'case $rc in',
    `  0) ${say(`pushed its system closure to ${a.cache}`)};;`,
    `  3) ${say(`builds on the host: nothing to push to ${a.cache} from here`)};;`,
    `  *) echo "${a.host}: push to ${a.cache} failed (exit $rc); the host receives its closure from the deploy machine instead"`,
    `     [ -s "$work/log" ] && tail -n ${PUSH_LOG_LINES} "$work/log" | cut -c1-${PUSH_LOG_COLUMNS};;`,
    "esac",
    // Best effort: never fails the deploy.
    "exit 0",
  ].join("\n");
}

/** What the deploy knows about a cache host when a push to it is made. */
export interface CacheTarget {
  name: string;
  address: pulumi.Input<string>;
  hostKey: pulumi.Input<string>;
  /** Its own switch, when it ran earlier in this rollout (the cache then serves the new system). */
  switched?: pulumi.Resource;
}

export interface PushBeforeArgs {
  host: HostModel;
  /** The host's inventory.json (what its switch evaluates). */
  inventory: pulumi.Input<string>;
  /** The switch's triggers: a push runs whenever the switch does. */
  triggers: pulumi.Input<string>[];
  /** The previous push of this wave (pushes of a wave run one after another) and the previous wave. */
  dependsOn: pulumi.Resource[];
}

export interface CachePushArgs {
  /** The validated fleet model (cache settings, deploy settings, cache hosts). */
  model: FleetModel;
}

/** `<host>-push-to-<cache>` steps, made by the deploy before each switch (components/deploy.ts). */
export class CachePush extends pulumi.ComponentResource {
  /** The cache host pushed to, or undefined (no push steps). */
  readonly target: string | undefined;
  private readonly model: FleetModel;

  constructor(name: string, args: CachePushArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:cache:CachePush", name, {}, opts);
    this.model = args.model;
    const { cache } = args.model;
    // Pushing serves nobody unless hosts substitute from the cache.
    this.target = cache.useFleetCache && cache.push
      ? args.model.hosts.filter((h) => h.roles.includes("cache") && cache.domains[h.name]).map((h) => h.name).sort()[0]
      : undefined;
    this.registerOutputs({ target: this.target });
  }

  /** The push of one host (none for the target itself); the host's switch depends on it. */
  pushBefore(a: PushBeforeArgs, targets: CacheTarget[]): local.Command[] {
    const d = this.model.deploy;
    const minutes = d.switchTimeoutMinutes;
    return targets.filter((t) => t.name === this.target && t.name !== a.host.name).map((t) => new local.Command(`${a.host.name}-push-to-${t.name}`, {
      create: pulumi.output(t.address).apply((cacheAddress) => pushCommand({
        host: a.host.name, arch: a.host.arch, cache: t.name, cacheAddress, flake: d.flake, sshUser: d.sshUser,
        remoteBuild: d.remoteBuild, timeoutMinutes: minutes,
      })),
      stdin: a.inventory,
      environment: { [HOST_KEY_ENV]: t.hostKey },
      triggers: a.triggers,
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn: [...a.dependsOn, ...(t.switched ? [t.switched] : [])],
      customTimeouts: { create: `${2 * minutes + 1}m`, update: `${2 * minutes + 1}m` },
    }));
  }
}
