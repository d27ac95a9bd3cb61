/**
 * What operators scrape: every host's node exporter and runner-fleet exporter (and, on
 * fireactions hosts, fireactions' and the scaler's metrics, relayed by our exporter), as
 * Prometheus file_sd targets with the labels alerts and the dashboard group by. Ports come from
 * nix/lib/monitoring.json, the file the hosts' NixOS modules read too. Rendering is pure; the
 * component only waits for the hosts' addresses.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { HostAddresses } from "./inventory";
import type { FleetModel, HostModel } from "./model";

export interface MonitoringPorts {
  nodeExporterPort: number;
  exporterPort: number;
  relays: Record<string, { path: string; upstream: string; role: string }>;
  guardPorts: number[];
}

export const MONITORING: MonitoringPorts = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "nix", "lib", "monitoring.json"), "utf8"));

/** The ports a scrape source must reach on a host (the relayed endpoints stay on loopback). */
export const SCRAPE_PORTS = { from: MONITORING.nodeExporterPort, to: MONITORING.exporterPort } as const;

/** One file_sd entry (https://prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config). */
export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** The cloud region (or location) a host is in; "" for existing machines. */
export function hostRegion(host: HostModel): string {
  switch (host.provider) {
    case "aws": return host.region;
    case "azure": return host.location;
    case "hetzner": return host.location;
    case "digitalocean": return host.region;
    case "existing": return "";
  }
}

/** host:port, IPv6 in brackets. */
const hostPort = (address: string, port: number) => (address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`);

/**
 * file_sd target groups: per host, node exporter, our exporter and (fireactions hosts) the two
 * relays, scraped at the address the exporters bind (private, else public). `__metrics_path__`
 * picks the relay's path, so one scrape job reads them all.
 */
export function renderTargets(model: FleetModel, addresses: Record<string, HostAddresses>): TargetGroup[] {
  const groups: TargetGroup[] = [];
  for (const host of model.hosts) {
    const addr = addresses[host.name];
    if (!addr) throw new Error(`no address for host ${host.name}`);
    const address = addr.private ?? addr.public;
    const labels = {
      stack: model.stack, host: host.name, provider: host.provider, region: hostRegion(host),
      roles: host.roles.join(","), pools: host.pools.join(","),
    };
    groups.push({ targets: [hostPort(address, MONITORING.nodeExporterPort)], labels: { ...labels, exporter: "node" } });
    groups.push({ targets: [hostPort(address, MONITORING.exporterPort)], labels: { ...labels, exporter: "runner-fleet" } });
    for (const [name, relay] of Object.entries(MONITORING.relays)) {
      if (!host.roles.includes(relay.role as HostModel["roles"][number])) continue;
      groups.push({ targets: [hostPort(address, MONITORING.exporterPort)], labels: { ...labels, exporter: name, __metrics_path__: relay.path } });
    }
  }
  return groups;
}

export interface FleetMonitoringArgs {
  /** The validated fleet model: hosts, roles, pools, stack. */
  model: FleetModel;
  /** Every host's public and private address, by name (the Fleet's `addresses`). */
  addresses: pulumi.Output<Record<string, HostAddresses>>;
}

export class FleetMonitoring extends pulumi.ComponentResource {
  /** file_sd target groups: `pulumi stack output --json prometheusTargets > targets.json`. */
  readonly prometheusTargets: pulumi.Output<TargetGroup[]>;

  constructor(name: string, args: FleetMonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:monitoring:FleetMonitoring", name, {}, opts);
    this.prometheusTargets = args.addresses.apply((addresses) => renderTargets(args.model, addresses));
    this.registerOutputs({ prometheusTargets: this.prometheusTargets });
  }
}
