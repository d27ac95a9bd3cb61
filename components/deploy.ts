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
  seedCommand,
  seedTriggerHash,
  seedWithoutPools,
  sha256,
  switchCommand,
} from "./deploy-commands";
import type { HostOutputs } from "./hosts/types";
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
    const parallel = process.env.PULUMI_NODEJS_PARALLEL;
    const tooFew = parallelWarning(d.batchSize, model.hosts.length, parallel ? Number(parallel) : undefined);
    if (tooFew) pulumi.log.warn(tooFew, this);

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

        // The host's SSH host key, pinned by every connection below (issue 14 item 7).
        const hostKey = this.hostKeyOf(host, out, model);
        const pinned = { [HOST_KEY_ENV]: hostKey };

        // A stock image knows only root (the provider put our key there); ours knows the deploy user.
        const ready = new remote.Command(`${host.name}-ready`, {
          connection: { host: out.publicAddress, user: stock ? "root" : d.sshUser, dialErrorLimit, hostKey },
          create: readinessCommand(host.name, d.readyTimeoutMinutes),
          triggers: [out.identity],
          addPreviousOutputInEnv: false,
        }, {
          parent: this,
          customTimeouts: { create: `${d.readyTimeoutMinutes}m` },
          // Once per machine: a new timeout setting alone must not re-run it (after an install,
          // root may no longer log in). A new machine or address still does.
          ignoreChanges: ["create", "connection.dialErrorLimit", "connection.hostKey"],
        });

        let install: local.Command | undefined;
        if (stock) {
          install = new local.Command(`${host.name}-install`, {
            create: out.publicAddress.apply((address) => installCommand({
              host: host.name, address, flake: d.flake, sshUser: d.sshUser, arch: host.arch, remoteBuild: d.remoteBuild,
              installTimeoutMinutes: d.installTimeoutMinutes, readyTimeoutMinutes: d.readyTimeoutMinutes,
              // No cloud-init wrote /etc/runner-fleet on an existing machine: the seed files go instead.
              filesFrom: seedJson ? "stdin" : "machine",
            })),
            stdin: seedJson
              ? pulumi.secret(pulumi.all([seedJson, inventory]).apply(([seed, inv]) => installStdin(seed, inv)))
              : inventory,
            environment: pinned,
            // A reinstall wipes the disk: only a new machine triggers one.
            triggers: [out.identity],
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

        const entryHash = inventory.apply(sha256);
        const sw = new local.Command(`${host.name}-switch`, {
          create: out.publicAddress.apply((address) => switchCommand({
            tool: d.tool, host: host.name, address, flake: d.flake, sshUser: d.sshUser, arch: host.arch, remoteBuild: d.remoteBuild,
            boot: host.boot, confirmTimeout: d.confirmTimeout, activationTimeout: d.activationTimeout, switchTimeoutMinutes: d.switchTimeoutMinutes,
          })),
          stdin: inventory,
          environment: pinned,
          // The previous deploy log is not needed, and over 128 KiB it would break exec.
          addPreviousOutputInEnv: false,
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
            connection: { host: out.publicAddress, user: d.sshUser, dialErrorLimit, hostKey },
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
            // The environment would carry the previous (secret) output into the host's session.
            addPreviousOutputInEnv: false,
          }, {
            parent: this,
            dependsOn: [sw],
            additionalSecretOutputs: ["stdout", "stderr"],
            customTimeouts: { create: `${SEED_TIMEOUT_MINUTES + 1}m`, update: `${SEED_TIMEOUT_MINUTES + 1}m` },
          });
        }

        // A host first reached on trust (a stock cloud image scanned before its install, an
        // existing machine without hostKey) publishes its own key to Vault once bootstrapped
        // (cloud-init on first boot; the seed on existing machines), and that must be the key
        // every connection so far was pinned to (--copy-host-keys keeps it across an install).
        // The pool push and the next wave wait for this check.
        let keyCheck: local.Command | undefined;
        const trustedOnFirstUse = host.provider === "existing" ? !host.hostKey : stock;
        if (trustedOnFirstUse) {
          keyCheck = new local.Command(`${host.name}-host-key-check`, {
            create: hostKeyFromVaultCommand(host.name, sshHostKeyApiPath(host.name, model), d.readyTimeoutMinutes),
            environment: { RF_VAULT_ADDR: model.vault.address, RF_EXPECT_KEY: hostKey },
            triggers: [out.identity],
            addPreviousOutputInEnv: false,
          }, {
            parent: this,
            dependsOn: [seed ?? sw],
            customTimeouts: { create: `${d.readyTimeoutMinutes + 1}m` },
          });
          thisWave.push(keyCheck);
        }

        if (host.roles.includes("fireactions")) {
          const pools = args.poolsJson[host.name];
          new remote.Command(`${host.name}-pools`, {
            connection: { host: out.publicAddress, user: d.sshUser, dialErrorLimit, hostKey },
            create: poolsCommand(host.name, POOLS_TIMEOUT_MINUTES),
            stdin: pools,
            triggers: [sha256(pools)],
            addPreviousOutputInEnv: false,
          }, {
            parent: this,
            dependsOn: [sw, ...(seed ? [seed] : []), ...(keyCheck ? [keyCheck] : [])],
            customTimeouts: { create: `${POOLS_TIMEOUT_MINUTES + 1}m`, update: `${POOLS_TIMEOUT_MINUTES + 1}m` },
          });
        }
      }
      previousWave = thisWave;
    }

    this.registerOutputs({ waves: this.waves, flakeHash: this.flakeHash });
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
        ? hostKeyFromVaultCommand(host.name, sshHostKeyApiPath(host.name, model), d.readyTimeoutMinutes)
        : out.publicAddress.apply((address) => hostKeyScanCommand(host.name, address, d.readyTimeoutMinutes)),
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
