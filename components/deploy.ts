/**
 * NixOS onto the hosts (DESIGN.md, "readiness -> first install -> switch -> pools"):
 *
 *   <host>-host-key local: the host's SSH host key, pinned by every step below: published by
 *                   the host in Vault (our images), or scanned on first contact (stock images,
 *                   existing machines without `hostKey`; those take it from config)
 *   <host>-ready    remote: wait until the machine has booted (once per machine)
 *   <host>-install  local: nixos-anywhere onto a stock image (once per machine; stock hosts only)
 *   <host>-switch   local: deploy-rs or colmena for this one host, in rolling waves
 *   <host>-seed     remote: existing machines only: the files cloud-init writes elsewhere
 *                   (host facts, pools, role_id, wrapped secret_id), then bootstrap
 *   <host>-host-key-check  local: a key trusted on first use must be the one the host then
 *                   publishes in Vault itself
 *   <host>-pools    remote: push pools.json in place (fireactions hosts), on every pool edit
 *
 * SSH credentials: every step authenticates with the deploy machine's ssh-agent. remote.Command
 * reads SSH_AUTH_SOCK itself when `agentSocketPath` is unset, and deploy-rs, colmena and
 * nixos-anywhere inherit it. We pass neither `privateKey` (the key would live in Pulumi state,
 * and rotating it would re-run every step) nor `agentSocketPath` (the socket path changes with
 * every login session; as an input it would re-run every remote step on the next `up`).
 *
 * Secrets: the inventory is not one. The wrapped secret_id that a stock cloud install must
 * preserve is copied host -> deploy machine -> host by the install script itself. Existing
 * machines get it from Pulumi (seedFiles) on the seed's and, with `install: true`, the install's
 * stdin: both are Pulumi secrets, and their output stays out of logs and plain state.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { local, remote } from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import {
  deployWaves,
  dialErrorLimitFor,
  hashFlakeSources,
  HOST_KEY_ENV,
  hostKeyFromVaultCommand,
  hostKeyScanCommand,
  installCommand,
  installStdin,
  isLocalFlake,
  parallelWarning,
  poolsCommand,
  readinessCommand,
  retireCommand,
  seedCommand,
  seedTriggerHash,
  seedWithoutPools,
  sha256,
  switchCommand,
  type Activation,
} from "./deploy-commands";
import type { CachePush } from "./cache-push";
import type { InventoryCache } from "./fleet-cache";
import type { HostOutputs } from "./hosts/types";
import { COMMAND_ENV, withOnlyEnv } from "./command-env";
import { buildInventory, renderInventoryJson } from "./inventory";
import type { FleetModel, HostModel } from "./model";
import { sshHostKeyApiPath } from "./vault-paths";

/** Bound for the pool push: a render check and a service restart. */
const POOLS_TIMEOUT_MINUTES = 10;
/** Bound for the seed: a few small files, an unwrap and service restarts. */
const SEED_TIMEOUT_MINUTES = 10;

export interface FleetDeployArgs {
  /** The validated fleet model (deploy settings, hosts). */
  model: FleetModel;
  /** Every host, in the order of model.hosts. */
  hosts: HostOutputs[];
  /** Each host's pools.json, by host name. */
  poolsJson: Record<string, string>;
  /**
   * runner-fleet-seed's document (deploy-commands.ts renderSeedJson) for every existing machine
   * and no other host, by host name: the user-data files they get no cloud-init to write.
   * Secret: it carries the wrapped secret_id.
   */
  seedFiles: Record<string, pulumi.Output<string>>;
  /** Makes `<host>-push-to-<cache>` before each switch (components/cache-push.ts). */
  push?: CachePush;
  /** inventory.json `cache` (components/fleet-cache.ts): every host's substituters. */
  cache?: pulumi.Input<InventoryCache | undefined>;
  /** Where a relative `deploy.flake` starts; defaults to the project root (Pulumi.yaml's directory). */
  baseDir?: string;
}

export class FleetDeploy extends pulumi.ComponentResource {
  /** Host names per wave, in rollout order. */
  readonly waves: string[][];
  /** The content address of the flake sources every switch is keyed on. */
  readonly flakeHash: string;
  /** Each host's switch command, by host name. */
  readonly switches: Record<string, local.Command> = {};

  constructor(name: string, args: FleetDeployArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:deploy:FleetDeploy", name, {}, opts);
    const { model } = args;
    const d = model.deploy;
    const outputs = validate(args);
    const activation = activationOverride(process.env.RUNNER_FLEET_ACTIVATION);

    this.flakeHash = flakeHashOf(d.flake, args.baseDir ?? path.resolve(__dirname, ".."), d.tool);
    const waves = deployWaves(model.hosts, d.batchSize);
    this.waves = waves.map((wave) => wave.map((h) => h.name));
    const parallel = process.env.PULUMI_NODEJS_PARALLEL;
    const tooFew = parallelWarning(d.batchSize, model.hosts.length, parallel ? Number(parallel) : undefined);
    if (tooFew) pulumi.log.warn(tooFew, this);

    const steps = new Map(model.hosts.map((host) => [host.name, this.hostContext(host, outputs.get(host.name)!, args, activation)]));
    // Cache hosts a push can reach: their switch, once made, tells whether it ran in an earlier wave.
    const cacheHosts = model.hosts.filter((h) => h.roles.includes("cache")).map((h) => steps.get(h.name)!);
    let previousWave: pulumi.Resource[] = [];
    for (const wave of waves) {
      const thisWave: pulumi.Resource[] = [];
      let previousPush: pulumi.Resource[] = [];
      for (const host of wave) {
        const step = steps.get(host.name)!;
        const ready = this.readyStep(step);
        const install = this.installStep(step, ready);
        const pushes = args.push?.pushBefore(
          { host, inventory: step.inventory, triggers: this.switchTriggers(step), dependsOn: [ready, ...(install ? [install] : []), ...previousWave, ...previousPush] },
          cacheHosts.map((c) => ({ name: c.host.name, address: c.out.publicAddress, hostKey: c.hostKey, ...(this.switches[c.host.name] ? { switched: this.switches[c.host.name] } : {}) })),
        ) ?? [];
        if (pushes.length) previousPush = pushes;
        const sw = this.switchStep(step, [ready, ...(install ? [install] : []), ...previousWave, ...pushes]);
        this.switches[host.name] = sw;
        thisWave.push(sw);
        const seed = this.seedStep(step, sw);
        const keyCheck = this.keyCheckStep(step, seed ?? sw);
        if (keyCheck) thisWave.push(keyCheck);
        this.poolsStep(step, [sw, ...(seed ? [seed] : []), ...(keyCheck ? [keyCheck] : [])]);
        this.retireStep(step, sw);
      }
      previousWave = thisWave;
    }

    this.registerOutputs({ waves: this.waves, flakeHash: this.flakeHash });
  }

  /** What every step of one host needs: its outputs, inventory entry, pinned key, seed files. */
  private hostContext(host: HostModel, out: HostOutputs, args: FleetDeployArgs, activation: Activation | undefined): HostStep {
    const { model } = args;
    // Only this host's part of the inventory: its bytes are what the switch evaluates, and
    // it depends on this host's address alone (not on every host of the fleet).
    const inventory = pulumi
      .all([out.publicAddress, out.privateAddress, args.cache])
      .apply(([pub, priv, cache]) => renderInventoryJson(buildInventory(model, { [host.name]: { public: pub, private: priv ?? null } }, [host.name], cache)));
    // The host's SSH host key, pinned by every connection below (issue 14 item 7).
    const hostKey = this.hostKeyOf(host, out, model);
    return {
      host, out, model, inventory, hostKey,
      d: model.deploy,
      stock: host.image === "stock",
      seedJson: host.provider === "existing" ? args.seedFiles[host.name] : undefined,
      poolsJson: args.poolsJson[host.name],
      dialErrorLimit: dialErrorLimitFor(model.deploy.readyTimeoutMinutes),
      trial: activation ? activation === "test" : host.trial,
      boot: activation ? activation === "boot" : host.boot,
    };
  }

  /** The deploy user's connection to the host, its key pinned. */
  private connection(s: HostStep, user = s.d.sshUser) {
    return { host: s.out.publicAddress, user, dialErrorLimit: s.dialErrorLimit, hostKey: s.hostKey };
  }

  /** <host>-ready: wait until the machine has booted. A stock image knows only root (the provider put our key there). */
  private readyStep(s: HostStep): remote.Command {
    return new remote.Command(`${s.host.name}-ready`, {
      connection: this.connection(s, s.stock ? "root" : s.d.sshUser),
      create: readinessCommand(s.host.name, s.d.readyTimeoutMinutes),
      triggers: [s.out.identity],
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      customTimeouts: { create: `${s.d.readyTimeoutMinutes}m` },
      // Once per machine: a new timeout setting alone must not re-run it (after an install,
      // root may no longer log in). A new machine or address still does.
      ignoreChanges: ["create", "connection.dialErrorLimit", "connection.hostKey"],
    });
  }

  /** <host>-install: nixos-anywhere onto a stock image, once per machine. */
  private installStep(s: HostStep, ready: pulumi.Resource): local.Command | undefined {
    if (!s.stock) return undefined;
    const { d, host } = s;
    return new local.Command(`${host.name}-install`, {
      create: s.out.publicAddress.apply((address) => withOnlyEnv(COMMAND_ENV.deploy, installCommand({
        host: host.name, address, flake: d.flake, sshUser: d.sshUser, arch: host.arch, remoteBuild: d.remoteBuild,
        installTimeoutMinutes: d.installTimeoutMinutes, readyTimeoutMinutes: d.readyTimeoutMinutes,
        // No cloud-init wrote /etc/runner-fleet on an existing machine: the seed files go instead.
        filesFrom: s.seedJson ? "stdin" : "machine",
      }))),
      stdin: s.seedJson
        ? pulumi.secret(pulumi.all([s.seedJson, s.inventory]).apply(([seed, inv]) => installStdin(seed, inv)))
        : s.inventory,
      environment: { [HOST_KEY_ENV]: s.hostKey },
      // A reinstall wipes the disk: only a new machine triggers one.
      triggers: [s.out.identity],
      // The script copies the wrapped secret_id; keep whatever it prints out of logs and plain state.
      logging: "stderr",
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn: [ready],
      customTimeouts: { create: `${d.installTimeoutMinutes + d.readyTimeoutMinutes + 7}m` },
      additionalSecretOutputs: ["stdout", "stderr"],
    });
  }

  /**
   * <host>-switch: deploy-rs or colmena for this one host, then the system check and the drained
   * restart of changed runner units (postSwitchLines). Wave N starts when all of wave N-1 has
   * switched; a failure there stops the rollout.
   */
  private switchStep(s: HostStep, dependsOn: pulumi.Resource[]): local.Command {
    const { d, host } = s;
    // The switch may wait for a drain before restarting fireactions.
    const minutes = d.switchTimeoutMinutes + d.drainTimeoutMinutes + 2;
    return new local.Command(`${host.name}-switch`, {
      create: s.out.publicAddress.apply((address) => withOnlyEnv(COMMAND_ENV.deploy, switchCommand({
        tool: d.tool, host: host.name, address, flake: d.flake, sshUser: d.sshUser, arch: host.arch, remoteBuild: d.remoteBuild,
        boot: s.boot, trial: s.trial, confirmTimeout: d.confirmTimeout, activationTimeout: d.activationTimeout,
        switchTimeoutMinutes: d.switchTimeoutMinutes, drainTimeoutMinutes: d.drainTimeoutMinutes, drainProceedOnTimeout: d.drainProceedOnTimeout,
      }))),
      stdin: s.inventory,
      environment: { [HOST_KEY_ENV]: s.hostKey },
      // The previous deploy log is not needed, and over 128 KiB it would break exec.
      addPreviousOutputInEnv: false,
      triggers: this.switchTriggers(s),
    }, {
      parent: this,
      dependsOn,
      customTimeouts: { create: `${minutes}m`, update: `${minutes}m` },
    });
  }

  /** What makes this host's system: the flake sources and its own inventory entry. */
  private switchTriggers(s: HostStep): pulumi.Input<string>[] {
    return [this.flakeHash, s.inventory.apply(sha256)];
  }

  /** <host>-seed: existing machines only, after the first switch (which installs runner-fleet-seed and the sudo right). */
  private seedStep(s: HostStep, sw: pulumi.Resource): remote.Command | undefined {
    const { host, seedJson } = s;
    if (!seedJson) return undefined;
    return new remote.Command(`${host.name}-seed`, {
      connection: this.connection(s),
      create: seedCommand(host.name, SEED_TIMEOUT_MINUTES),
      // A change outside the triggers (a new wrapped token, mostly) runs this no-op, not the
      // seed: the host has unwrapped the old one already. The seed would keep its secret_id
      // anyway, but it would restart vault-agent and the runners for nothing.
      update: "true",
      // Fireactions hosts get pools.json from their pools push, so a pool edit leaves this alone.
      stdin: pulumi.secret(host.roles.includes("fireactions") ? seedJson.apply(seedWithoutPools) : seedJson),
      // Unsecret: the hash covers the host facts and role_id only (SEED_UNTRIGGERED).
      triggers: [s.out.identity, pulumi.unsecret(seedJson.apply(seedTriggerHash))],
      logging: "none",
      // The environment would carry the previous (secret) output into the host's session.
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn: [sw],
      additionalSecretOutputs: ["stdout", "stderr"],
      customTimeouts: { create: `${SEED_TIMEOUT_MINUTES + 1}m`, update: `${SEED_TIMEOUT_MINUTES + 1}m` },
    });
  }

  /**
   * <host>-host-key-check: a host first reached on trust (a stock cloud image scanned before its
   * install, an existing machine without hostKey) publishes its own key to Vault once
   * bootstrapped (cloud-init on first boot; the seed on existing machines), and that must be the
   * key every connection so far was pinned to (--copy-host-keys keeps it across an install).
   * The pool push and the next wave wait for this check.
   */
  private keyCheckStep(s: HostStep, after: pulumi.Resource): local.Command | undefined {
    const { host, model, d } = s;
    const trustedOnFirstUse = host.provider === "existing" ? !host.hostKey : s.stock;
    if (!trustedOnFirstUse) return undefined;
    return new local.Command(`${host.name}-host-key-check`, {
      create: withOnlyEnv(COMMAND_ENV.vaultRead, hostKeyFromVaultCommand(host.name, sshHostKeyApiPath(host.name, model), d.readyTimeoutMinutes)),
      environment: { RF_VAULT_ADDR: model.vault.address, RF_EXPECT_KEY: s.hostKey },
      triggers: [s.out.identity],
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn: [after],
      customTimeouts: { create: `${d.readyTimeoutMinutes + 1}m` },
    });
  }

  /** <host>-pools: push pools.json (fireactions hosts), on every pool edit; the host reloads fireactions. */
  private poolsStep(s: HostStep, dependsOn: pulumi.Resource[]): void {
    if (!s.host.roles.includes("fireactions")) return;
    new remote.Command(`${s.host.name}-pools`, {
      connection: this.connection(s),
      create: poolsCommand(s.host.name, POOLS_TIMEOUT_MINUTES),
      stdin: s.poolsJson,
      triggers: [sha256(s.poolsJson)],
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn,
      customTimeouts: { create: `${POOLS_TIMEOUT_MINUTES + 1}m`, update: `${POOLS_TIMEOUT_MINUTES + 1}m` },
    });
  }

  /**
   * <host>-retire: nothing on create; on delete (`config rm`, `destroy`, and the old machine of
   * a replacement: the trigger is the machine's identity) it drains the host before the machine
   * goes. It depends on the host's outputs, so the engine deletes it before the machine.
   */
  private retireStep(s: HostStep, sw: pulumi.Resource): void {
    const { host, d } = s;
    if (!host.roles.some((r) => RUNNER_ROLES.includes(r))) return;
    new remote.Command(`${host.name}-retire`, {
      connection: this.connection(s),
      create: "true",
      delete: retireCommand(host.name, d.drainTimeoutMinutes, d.drainProceedOnTimeout),
      triggers: [s.out.identity],
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      dependsOn: [sw],
      customTimeouts: { delete: `${d.drainTimeoutMinutes + 2}m` },
    });
  }

  /**
   * Where a host's SSH host key comes from:
   *  - existing machine with `hostKey` in config: that key;
   *  - host booted from our image: the key it publishes to Vault with its own AppRole token
   *    (only the holder of its unwrapped secret_id can write there), awaited by `<host>-host-key`;
   *  - stock image, or existing machine without `hostKey`: trust on first use, the ed25519 key
   *    the address offers (`<host>-host-key` scans it), pinned from then on.
   * Once per machine: a new machine (identity) looks again.
   */
  private hostKeyOf(host: HostModel, out: HostOutputs, model: FleetModel): pulumi.Output<string> {
    const d = model.deploy;
    if (host.provider === "existing" && host.hostKey) return pulumi.output(host.hostKey);
    const fromVault = host.image === "nix" && host.provider !== "existing";
    const lookup = new local.Command(`${host.name}-host-key`, {
      create: fromVault
        ? withOnlyEnv(COMMAND_ENV.vaultRead, hostKeyFromVaultCommand(host.name, sshHostKeyApiPath(host.name, model), d.readyTimeoutMinutes))
        : out.publicAddress.apply((address) => withOnlyEnv(COMMAND_ENV.deploy, hostKeyScanCommand(host.name, address, d.readyTimeoutMinutes))),
      ...(fromVault ? { environment: { RF_VAULT_ADDR: model.vault.address } } : {}),
      triggers: [out.identity],
      addPreviousOutputInEnv: false,
    }, {
      parent: this,
      customTimeouts: { create: `${d.readyTimeoutMinutes + 1}m` },
      // Once per machine (triggers): a new timeout or address alone does not look again.
      ignoreChanges: ["create"],
    });
    return lookup.stdout.apply((s) => (s ?? "").trim());
  }
}

/** Roles whose runners a removal must drain first. */
const RUNNER_ROLES: readonly string[] = ["fireactions", "forgejo-runner", "gitea-runner", "gitlab-runner"];

interface HostStep {
  host: HostModel;
  out: HostOutputs;
  model: FleetModel;
  d: FleetModel["deploy"];
  inventory: pulumi.Output<string>;
  hostKey: pulumi.Output<string>;
  stock: boolean;
  seedJson: pulumi.Output<string> | undefined;
  poolsJson: string;
  dialErrorLimit: number;
  trial: boolean;
  boot: boolean;
}

/** RUNNER_FLEET_ACTIVATION: one run's activation for every host (test, boot or switch). */
export function activationOverride(value: string | undefined): Activation | undefined {
  if (value === undefined || value === "") return undefined;
  if (value === "test" || value === "boot" || value === "switch") return value;
  throw new Error(`RUNNER_FLEET_ACTIVATION: must be test, boot or switch, got ${JSON.stringify(value)}`);
}

/**
 * Every host of the model has its outputs, every fireactions host its pools.json, and seed files
 * exist for exactly the existing machines (cloud hosts get theirs from cloud-init).
 */
function validate(args: FleetDeployArgs): Map<string, HostOutputs> {
  const byName = new Map(args.hosts.map((h) => [h.name, h]));
  const problems: string[] = [];
  for (const host of args.model.hosts) {
    if (!byName.has(host.name)) problems.push(`host ${host.name}: no host outputs were passed`);
    if (host.roles.includes("fireactions") && typeof args.poolsJson[host.name] !== "string") problems.push(`host ${host.name}: no pools.json`);
    const seeded = Object.prototype.hasOwnProperty.call(args.seedFiles, host.name);
    if (host.provider === "existing" && !seeded) problems.push(`host ${host.name}: no seed files (an existing machine has no cloud-init)`);
    if (host.provider !== "existing" && seeded) problems.push(`host ${host.name}: seed files for a ${host.provider} host (cloud-init writes them)`);
  }
  const known = new Set(args.model.hosts.map((h: HostModel) => h.name));
  for (const h of args.hosts) if (!known.has(h.name)) problems.push(`host ${h.name}: not in the fleet model`);
  for (const h of Object.keys(args.seedFiles)) if (!known.has(h)) problems.push(`host ${h}: seed files for a host not in the fleet model`);
  if (problems.length) throw new Error(`FleetDeploy: ${problems.join("; ")}`);
  return byName;
}

/** The flake's content address: its sources when local, else the reference itself (a URL pins a revision). */
function flakeHashOf(flake: string, baseDir: string, tool: FleetModel["deploy"]["tool"]): string {
  if (!isLocalFlake(flake)) {
    if (tool === "colmena") throw new Error(`deploy.flake: colmena deploys from a local flake directory, not ${flake}`);
    return sha256(flake);
  }
  const dir = path.resolve(baseDir, flake);
  if (!fs.existsSync(path.join(dir, "flake.nix"))) throw new Error(`deploy.flake: ${dir} has no flake.nix`);
  return hashFlakeSources(dir);
}
