/**
 * inventory.json: what `nix/` reads to build deploy-rs nodes and the colmena hive
 * (contract in docs/contracts.md). Pure: the model plus the hosts' addresses.
 */
import type { InventoryCache } from "./fleet-cache";
import type { DataDisk, FleetModel, HostModel, RegistryMirrorModel, RemoteBuild } from "./model";
import { secretFilesFor, type SecretFile } from "./vault-paths";

export interface HostAddresses {
  public: string;
  private: string | null;
}

export interface InventoryHost {
  name: string;
  provider: HostModel["provider"];
  address: string;
  privateAddress: string | null;
  arch: HostModel["arch"];
  system: `${HostModel["arch"]}-linux`;
  roles: HostModel["roles"];
  tags: string[];
  sshUser: string;
  sshPort: number;
  boot: boolean;
  image: HostModel["image"];
  secrets: SecretFile[];
  /**
   * deploy.remoteBuild: `always` builds on the host, `never` on the deploy machine, `auto` on
   * the host when its system differs from the deploy machine's. nix/lib sets colmena's
   * `deployment.buildOnTarget` from it (the switch passes colmena --build-on-target or
   * --no-build-on-target, and deploy-rs --remote-build, itself).
   */
  remoteBuild: RemoteBuild;
  /** Existing machines with install: true: the disk their disko layout partitions. */
  installDisk?: string;
  /** fireactions hosts: the registry mirror (nix/modules/registry-mirror.nix). */
  registryMirror?: RegistryMirrorModel;
  /** Data disks with a purpose (nix/modules/data-disks.nix). */
  dataDisks: DataDisk[];
  thinPoolEncrypt: boolean;
}

export interface Inventory {
  version: 1;
  stack: string;
  sshAuthorizedKeys: string[];
  vault: { address: string; mount: string; authMount: string };
  /** Present only when configured: the services the runner roles register with. */
  github?: { organization: string; url: string };
  forgejo?: { url: string; labels: string[] };
  gitea?: { url: string; labels: string[] };
  gitlab?: { url: string };
  /** The substituters every host uses (components/fleet-cache.ts); absent in inventories built without them. */
  cache?: InventoryCache;
  /** deploy.drainTimeoutMinutes: forgejo/gitea runners wait this long for jobs when stopped. */
  drain: { timeoutMinutes: number };
  /** monitoring.allowCidrs: nix/modules/monitoring.nix opens the exporters' ports to these only. */
  monitoring: { allowCidrs: string[] };
  hosts: Record<string, InventoryHost>;
}

/**
 * The inventory of the whole fleet, or of the hosts named in `only` (the fleet-wide fields
 * plus their entries: what one host's deploy evaluates).
 */
export function buildInventory(model: FleetModel, addresses: Record<string, HostAddresses>, only?: readonly string[], cache?: InventoryCache): Inventory {
  const hosts: Record<string, InventoryHost> = {};
  const selected = only ? model.hosts.filter((h) => only.includes(h.name)) : model.hosts;
  for (const host of [...selected].sort((a, b) => a.name.localeCompare(b.name))) {
    const addr = addresses[host.name];
    if (!addr) throw new Error(`no address for host ${host.name}`);
    hosts[host.name] = {
      name: host.name,
      provider: host.provider,
      address: addr.public,
      privateAddress: addr.private,
      arch: host.arch,
      system: `${host.arch}-linux`,
      roles: host.roles,
      tags: host.tags,
      sshUser: model.deploy.sshUser,
      sshPort: 22,
      boot: host.boot,
      image: host.image,
      secrets: secretFilesFor(host, model),
      remoteBuild: model.deploy.remoteBuild,
      ...(host.provider === "existing" && host.installDisk ? { installDisk: host.installDisk } : {}),
      ...(host.registryMirror ? { registryMirror: host.registryMirror } : {}),
      dataDisks: host.dataDisks,
      thinPoolEncrypt: host.thinPoolEncrypt,
    };
  }
  return {
    version: 1,
    stack: model.stack,
    sshAuthorizedKeys: model.ssh.authorizedKeys,
    vault: { address: model.vault.address, mount: model.vault.mount, authMount: model.vault.authMount },
    ...(model.github ? { github: { organization: model.github.organization, url: model.github.url } } : {}),
    ...(model.forgejo ? { forgejo: model.forgejo } : {}),
    ...(model.gitea ? { gitea: model.gitea } : {}),
    ...(model.gitlab ? { gitlab: model.gitlab } : {}),
    ...(cache ? { cache } : {}),
    drain: { timeoutMinutes: model.deploy.drainTimeoutMinutes },
    monitoring: { allowCidrs: model.monitoring.allowCidrs },
    hosts,
  };
}

export function renderInventoryJson(inventory: Inventory): string {
  return `${JSON.stringify(inventory, null, 2)}\n`;
}
