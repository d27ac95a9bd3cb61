/**
 * NixOS onto the hosts (DESIGN.md, "readiness -> first install -> switch -> pools"):
 *
 *   <host>-ready    remote: wait until the machine has booted (once per machine)
 *   <host>-install  local: nixos-anywhere onto a stock image (once per machine; stock hosts only)
 *   <host>-switch   local: deploy-rs or colmena for this one host, in rolling waves
 *   <host>-seed     remote: existing machines only: the files cloud-init writes elsewhere
 *                   (host facts, pools, role_id, wrapped secret_id), then bootstrap
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
  installCommand,
  installStdin,
  isLocalFlake,
  poolsCommand,
  readinessCommand,
  seedCommand,
  seedTriggerHash,
  seedWithoutPools,
  sha256,
  switchCommand,
} from "./deploy-commands";
import type { HostOutputs } from "./hosts/types";
import { buildInventory, renderInventoryJson } from "./inventory";
import type { FleetModel, HostModel } from "./model";

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

    this.flakeHash = flakeHashOf(d.flake, args.baseDir ?? path.resolve(__dirname, ".."), d.tool);
    const waves = deployWaves(model.hosts, d.batchSize);
    this.waves = waves.map((wave) => wave.map((h) => h.name));
    const dialErrorLimit = dialErrorLimitFor(d.readyTimeoutMinutes);

    let previousWave: pulumi.Resource[] = [];
    for (const wave of waves) {
      const thisWave: pulumi.Resource[] = [];
      for (const host of wave) {
        const out = outputs.get(host.name)!;
        const stock = host.image === "stock";
        const seedJson = host.provider === "existing" ? args.seedFiles[host.name] : undefined;
        // Only this host's part of the inventory: its bytes are what the switch evaluates, and
        // it depends on this host's address alone (not on every host of the fleet).
        const inventory = pulumi
          .all([out.publicAddress, out.privateAddress])
          .apply(([pub, priv]) => renderInventoryJson(buildInventory(model, { [host.name]: { public: pub, private: priv ?? null } }, [host.name])));

        // A stock image knows only root (the provider put our key there); ours knows the deploy user.
        const ready = new remote.Command(`${host.name}-ready`, {
          connection: { host: out.publicAddress, user: stock ? "root" : d.sshUser, dialErrorLimit },
          create: readinessCommand(host.name, d.readyTimeoutMinutes),
          triggers: [out.identity],
        }, {
          parent: this,
          customTimeouts: { create: `${d.readyTimeoutMinutes}m` },
          // Once per machine: a new timeout setting alone must not re-run it (after an install,
          // root may no longer log in). A new machine or address still does.
          ignoreChanges: ["create", "connection.dialErrorLimit"],
        });

        let install: local.Command | undefined;
        if (stock) {
          install = new local.Command(`${host.name}-install`, {
            create: out.publicAddress.apply((address) => installCommand({
              host: host.name, address, flake: d.flake, sshUser: d.sshUser,
              installTimeoutMinutes: d.installTimeoutMinutes, readyTimeoutMinutes: d.readyTimeoutMinutes,
              // No cloud-init wrote /etc/runner-fleet on an existing machine: the seed files go instead.
              filesFrom: seedJson ? "stdin" : "machine",
            })),
            stdin: seedJson
              ? pulumi.secret(pulumi.all([seedJson, inventory]).apply(([seed, inv]) => installStdin(seed, inv)))
              : inventory,
            // A reinstall wipes the disk: only a new machine triggers one.
            triggers: [out.identity],
            // The script copies the wrapped secret_id; keep whatever it prints out of logs and plain state.
            logging: "stderr",
          }, {
            parent: this,
            dependsOn: [ready],
            customTimeouts: { create: `${d.installTimeoutMinutes + d.readyTimeoutMinutes + 7}m` },
            additionalSecretOutputs: ["stdout", "stderr"],
          });
        }

        const entryHash = inventory.apply(sha256);
        const sw = new local.Command(`${host.name}-switch`, {
          create: out.publicAddress.apply((address) => switchCommand({
            tool: d.tool, host: host.name, address, flake: d.flake, sshUser: d.sshUser, boot: host.boot,
            confirmTimeout: d.confirmTimeout, activationTimeout: d.activationTimeout, switchTimeoutMinutes: d.switchTimeoutMinutes,
          })),
          stdin: inventory,
          // What makes this host's system: the flake sources and its own inventory entry.
          triggers: [this.flakeHash, entryHash],
        }, {
          parent: this,
          // Wave N starts when all of wave N-1 has switched; a failure there stops the rollout.
          dependsOn: [ready, ...(install ? [install] : []), ...previousWave],
          customTimeouts: { create: `${d.switchTimeoutMinutes + 1}m`, update: `${d.switchTimeoutMinutes + 1}m` },
        });
        this.switches[host.name] = sw;
        thisWave.push(sw);

        let seed: remote.Command | undefined;
        if (seedJson) {
          // After the first switch, which installs runner-fleet-seed and the deploy user's sudo right.
          seed = new remote.Command(`${host.name}-seed`, {
            connection: { host: out.publicAddress, user: d.sshUser, dialErrorLimit },
            create: seedCommand(host.name, SEED_TIMEOUT_MINUTES),
            // A change outside the triggers (a new wrapped token, mostly) runs this no-op, not the
            // seed: the host has unwrapped the old one already. The seed would keep its secret_id
            // anyway, but it would restart vault-agent and the runners for nothing.
            update: "true",
            // Fireactions hosts get pools.json from their pools push, so a pool edit leaves this alone.
            stdin: pulumi.secret(host.roles.includes("fireactions") ? seedJson.apply(seedWithoutPools) : seedJson),
            // Unsecret: the hash covers the host facts and role_id only (SEED_UNTRIGGERED).
            triggers: [out.identity, pulumi.unsecret(seedJson.apply(seedTriggerHash))],
            logging: "none",
          }, {
            parent: this,
            dependsOn: [sw],
            additionalSecretOutputs: ["stdout", "stderr"],
            customTimeouts: { create: `${SEED_TIMEOUT_MINUTES + 1}m`, update: `${SEED_TIMEOUT_MINUTES + 1}m` },
          });
        }

        if (host.roles.includes("fireactions")) {
          const pools = args.poolsJson[host.name];
          new remote.Command(`${host.name}-pools`, {
            connection: { host: out.publicAddress, user: d.sshUser, dialErrorLimit },
            create: poolsCommand(host.name, POOLS_TIMEOUT_MINUTES),
            stdin: pools,
            triggers: [sha256(pools)],
          }, {
            parent: this,
            dependsOn: [sw, ...(seed ? [seed] : [])],
            customTimeouts: { create: `${POOLS_TIMEOUT_MINUTES + 1}m`, update: `${POOLS_TIMEOUT_MINUTES + 1}m` },
          });
        }
      }
      previousWave = thisWave;
    }

    this.registerOutputs({ waves: this.waves, flakeHash: this.flakeHash });
  }
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
