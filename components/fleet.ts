/**
 * The fleet: the pipeline of DESIGN.md as one component. Images are uploaded once per content
 * hash; each host gets its Vault access, its user-data and pools.json, and a machine; the
 * inventory of every host feeds the NixOS deploys, which roll out in waves.
 */
import * as pulumi from "@pulumi/pulumi";
import { renderUserData, userDataFiles, type UserDataInput } from "./cloud-init";
import { FleetDeploy } from "./deploy";
import { renderSeedJson } from "./deploy-commands";
import { createHost } from "./hosts";
import { SharedNetworks } from "./hosts/network";
import type { HostOutputs } from "./hosts/types";
import { CachePush } from "./cache-push";
import { FleetCache } from "./fleet-cache";
import { FleetImages } from "./images";
import { buildInventory, renderInventoryJson, type HostAddresses } from "./inventory";
import type { FleetSecrets } from "./load";
import type { FleetModel, HostModel } from "./model";
import { FleetMonitoring, type TargetGroup } from "./monitoring";
import { renderPoolsJson } from "./pools";
import { FleetVault } from "./vault";

export interface FleetArgs {
  /** The validated fleet model (components/config.ts). */
  model: FleetModel;
  /** Secret config values, kept as Pulumi secrets end to end. */
  secrets: FleetSecrets;
}

export class Fleet extends pulumi.ComponentResource {
  /** inventory.json, the file `nix/` builds deploy targets from. */
  readonly inventoryJson: pulumi.Output<string>;
  /** Public and private address of every host, by name. */
  readonly addresses: pulumi.Output<Record<string, HostAddresses>>;
  /** Each host's pools.json, by host name (known without any cloud). */
  readonly poolsJson: Record<string, string>;
  /** Host names per deploy wave, in rollout order (`deploy.batchSize` hosts a wave). */
  readonly deployWaves: string[][];
  /** Each host's cloud-init user-data, by host name (secret: it carries a wrapped secret_id). */
  readonly userData: pulumi.Output<Record<string, string>>;
  /** Prometheus file_sd targets: every host's exporters, labelled by stack, host, provider, region, roles, pools. */
  readonly prometheusTargets: pulumi.Output<TargetGroup[]>;

  constructor(name: string, args: FleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:index:Fleet", name, {}, opts);
    const { model, secrets } = args;

    const images = new FleetImages("images", { model }, { parent: this });
    const vault = new FleetVault("vault", { model, secrets }, { parent: this });
    const networks = new SharedNetworks("network", { model }, { parent: this });
    const cache = new FleetCache("cache", { model, ...(secrets.cacheSigningKey ? { signingKey: secrets.cacheSigningKey } : {}) }, { parent: this });

    this.poolsJson = {};
    const userDataByHost: Record<string, pulumi.Output<string>> = {};
    const seedFiles: Record<string, pulumi.Output<string>> = {};
    const hosts: HostOutputs[] = [];
    for (const host of model.hosts) {
      const poolsJson = renderPoolsJson(host.pools.map((p) => model.pools[p]));
      const { userData, seedJson } = this.renderUserData(host, model, poolsJson, vault, secrets);
      this.poolsJson[host.name] = poolsJson;
      userDataByHost[host.name] = userData;
      if (seedJson) seedFiles[host.name] = seedJson;
      const image = images.refFor(host);
      // A host boots and reads its secrets at once: they must be in Vault before it exists. Only
      // its own secrets: depending on the whole Vault component costs O(hosts^2) in the engine.
      const created = createHost({ host, model, userData, image, networks }, { parent: this, dependsOn: vault.access(host.name).secrets });
      hosts.push(created);
      // A cloud host's address exists only now: its role is bound to it after the machine.
      if (created.instance) vault.bindAddresses(host.name, [created.publicAddress, created.privateAddress, ...(created.publicIpv6 ? [created.publicIpv6] : [])], [created.instance]);
    }

    this.userData = pulumi.all(userDataByHost);
    this.addresses = pulumi
      .all(hosts.map((h) => pulumi.all([h.publicAddress, h.privateAddress]).apply(([pub, priv]) => [h.name, { public: pub, private: priv ?? null }] as const)))
      .apply((entries) => Object.fromEntries(entries) as Record<string, HostAddresses>);
    this.inventoryJson = pulumi.all([this.addresses, cache.inventory]).apply(([addresses, c]) => renderInventoryJson(buildInventory(model, addresses, undefined, c)));
    this.prometheusTargets = new FleetMonitoring("monitoring", { model, addresses: this.addresses }, { parent: this }).prometheusTargets;

    const push = new CachePush("cache-push", { model }, { parent: this });
    const deploy = new FleetDeploy("deploy", { model, hosts, poolsJson: this.poolsJson, seedFiles, cache: cache.inventory, push }, { parent: this });
    this.deployWaves = deploy.waves;

    this.registerOutputs({ inventoryJson: this.inventoryJson, addresses: this.addresses, deployWaves: this.deployWaves, prometheusTargets: this.prometheusTargets });
  }

  /**
   * user-data needs the host's AppRole ids, which exist only once Vault has them. Existing
   * machines get no cloud-init: the same files go to runner-fleet-seed instead (seedJson).
   */
  private renderUserData(host: HostModel, model: FleetModel, poolsJson: string, vault: FleetVault, secrets: FleetSecrets): { userData: pulumi.Output<string>; seedJson?: pulumi.Output<string> } {
    const access = vault.access(host.name);
    // Only the explicit, warned opt-in puts the App key into user-data.
    const appKey = model.unsafe.githubAppKeyInUserData && host.roles.includes("fireactions") ? secrets.githubApp : undefined;
    const input = pulumi.all([access.roleId, access.wrappedSecretId, appKey]).apply(([roleId, wrappedSecretId, githubAppPrivateKey]): UserDataInput =>
      ({ host, model, poolsJson, roleId, wrappedSecretId, ...(githubAppPrivateKey ? { githubAppPrivateKey } : {}) }));
    return {
      userData: pulumi.secret(input.apply(renderUserData)),
      ...(host.provider === "existing" ? { seedJson: pulumi.secret(input.apply((i) => renderSeedJson(userDataFiles(i)))) } : {}),
    };
  }
}
