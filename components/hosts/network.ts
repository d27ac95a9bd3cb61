/**
 * Network pieces shared by every host of a region: created once per region (or per cloud where
 * the cloud's object is global), never per host, so adding a host adds only its machine.
 *
 *  - AWS, per region: a security group in the default VPC (or one per given subnet's VPC), a key
 *    pair. Regions go through @pulumi/aws 7's per-resource `region` input, so the default
 *    provider (and the user's aws:profile / assume-role settings) serves every region.
 *  - Azure, per location: resource group, VNet + subnet, an NSG on the subnet.
 *  - Hetzner Cloud (project-wide objects): one firewall, one SSH key, placement groups by name.
 *  - DigitalOcean, per region: a VPC, a firewall applied through a tag; one SSH key.
 *
 * SSH is open only to ssh.adminCidrs (IPv4 and IPv6 in separate rules); the whole Internet only
 * with ssh.allowFromAnywhere. The exporters' ports (components/monitoring.ts SCRAPE_PORTS) are
 * open only to monitoring.allowCidrs, in rules of their own. Egress is open: hosts fetch from
 * caches, registries and Vault.
 */
import * as ec2 from "@pulumi/aws/ec2";
import type * as awsInput from "@pulumi/aws/types/input";
import * as network from "@pulumi/azure-native/network";
import * as resources from "@pulumi/azure-native/resources";
import * as digitalocean from "@pulumi/digitalocean";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import type { AwsHost, FleetModel } from "../model";
import { SCRAPE_PORTS } from "../monitoring";
import { ANYWHERE, awsGroupKey, awsKeyPairKey, digitalOceanTag, fleetTags, hetznerLabel, monitoringSources, sshSources, type SshSources } from "./common";

/** "9100-9101": the scrape ports as Hetzner, DigitalOcean and Azure write a port range. */
const SCRAPE_RANGE = `${SCRAPE_PORTS.from}-${SCRAPE_PORTS.to}`;

export interface SharedNetworksArgs {
  /** The validated fleet model: which regions need network pieces. */
  model: FleetModel;
}

/** What an AWS host of a region uses. */
export interface AwsNetwork {
  securityGroupId: pulumi.Output<string>;
  /** Undefined when no authorized key is a type EC2 can import (keys then come via user-data only). */
  keyName?: pulumi.Output<string>;
}

/** What an Azure host of a location uses. */
export interface AzureNetwork {
  resourceGroupName: pulumi.Output<string>;
  subnetId: pulumi.Output<string>;
}

/** What a Hetzner Cloud host uses. */
export interface HetznerNetwork {
  firewallId: pulumi.Output<number>;
  sshKeyId: pulumi.Output<string>;
  /** Undefined when the host names no placement group. */
  placementGroupId?: pulumi.Output<number>;
}

/** What a DigitalOcean host of a region uses. */
export interface DigitalOceanNetwork {
  vpcId: pulumi.Output<string>;
  /** Droplets carrying this tag get the region's firewall. */
  firewallTag: pulumi.Output<string>;
  sshKeyId: pulumi.Output<string>;
}

/** Hetzner firewall / DigitalOcean firewall rules for SSH: one per IP family, both when open. */
function cidrRules(sources: SshSources): string[][] {
  return [sources.ipv4, sources.ipv6].filter((list) => list.length > 0);
}

/** The SSH key a stack creates in a Hetzner project or DigitalOcean account: named after the stack, so stacks sharing one tell their keys apart. */
export function sshKeyName(stack: string): string {
  return `runner-fleet-${stack}`;
}

/** Hetzner/DigitalOcean ids are integers; the providers return them as strings. */
const toNumber = (id: string) => Number.parseInt(id, 10);

export class SharedNetworks extends pulumi.ComponentResource {
  private readonly awsKeys = new Map<string, ec2.KeyPair>();
  private readonly awsGroups = new Map<string, ec2.SecurityGroup>();
  private readonly azureNets = new Map<string, AzureNetwork>();
  private readonly doNets = new Map<string, { vpc: digitalocean.Vpc; tag: digitalocean.Tag }>();
  private readonly placementGroups = new Map<string, hcloud.PlacementGroup>();
  private hetznerFirewall?: hcloud.Firewall;
  private hetznerKeyId?: pulumi.Output<string>;
  private doKeyId?: pulumi.Output<string>;

  constructor(name: string, args: SharedNetworksArgs, opts?: pulumi.ComponentResourceOptions) {
    super("runner-fleet:hosts:SharedNetworks", name, {}, opts);
    const { model } = args;
    const sources = sshSources(model);
    const clouds = model.hosts.filter((h) => h.provider !== "existing");

    // Validate everything before the first child exists.
    if (clouds.length > 0 && sources.ipv4.length + sources.ipv6.length === 0) {
      throw new Error("runner-fleet:ssh.adminCidrs: is empty and ssh.allowFromAnywhere is off: no one could reach SSH on the cloud hosts");
    }
    if (clouds.length > 0 && model.ssh.authorizedKeys.length === 0) {
      throw new Error("runner-fleet:ssh.authorizedKeys: at least one key is needed for the cloud hosts");
    }
    for (const host of model.hosts) {
      if (host.provider === "aws" && !host.region) throw new Error(`runner-fleet:hosts.${host.name}.region: no AWS region (set it or aws:region)`);
      if (host.provider === "azure" && !host.location) throw new Error(`runner-fleet:hosts.${host.name}.location: no Azure location (set it or azure-native:location)`);
    }

    const tags = fleetTags(model);
    for (const host of model.hosts) {
      switch (host.provider) {
        case "aws":
          this.createAws(host, model, sources, tags);
          break;
        case "azure":
          if (!this.azureNets.has(host.location)) this.azureNets.set(host.location, this.createAzure(host.location, model, sources, tags));
          break;
        case "hetzner":
          this.createHetzner(model, sources);
          if (host.placementGroup && !this.placementGroups.has(host.placementGroup)) {
            // Spread: the group's servers land on different physical hosts (at most 10 per group).
            this.placementGroups.set(host.placementGroup, new hcloud.PlacementGroup(host.placementGroup, {
              type: "spread",
              labels: { fleet: hetznerLabel(tags.fleet), stack: hetznerLabel(model.stack) },
            }, { parent: this }));
          }
          break;
        case "digitalocean":
          if (!this.doNets.has(host.region)) this.createDigitalOcean(host.region, model, sources);
          break;
        case "existing":
          break;
      }
    }

    this.registerOutputs({});
  }

  // ---------------------------------------------------------------------------------------------
  // AWS

  private createAws(host: AwsHost, model: FleetModel, sources: SshSources, tags: Record<string, string>): void {
    const region = host.region;
    if (!this.awsKeys.has(region)) {
      const publicKey = awsKeyPairKey(model.ssh.authorizedKeys);
      if (publicKey) {
        this.awsKeys.set(region, new ec2.KeyPair(`${region}-ssh`, { region, publicKey, tags }, { parent: this }));
      }
    }
    const key = awsGroupKey(host);
    if (this.awsGroups.has(key)) return;
    const invokeOpts = { parent: this };
    // A given subnet decides the VPC; otherwise hosts go to the region's default VPC.
    const vpcId = host.subnetId
      ? ec2.getSubnetOutput({ id: host.subnetId, region }, invokeOpts).vpcId
      : ec2.getVpcOutput({ default: true, region }, invokeOpts).id;
    const ingress: awsInput.ec2.SecurityGroupIngress[] = [];
    if (sources.ipv4.length) ingress.push({ description: "SSH (IPv4)", protocol: "tcp", fromPort: 22, toPort: 22, cidrBlocks: sources.ipv4 });
    if (sources.ipv6.length) ingress.push({ description: "SSH (IPv6)", protocol: "tcp", fromPort: 22, toPort: 22, ipv6CidrBlocks: sources.ipv6 });
    const scrape = monitoringSources(model);
    if (scrape.ipv4.length) ingress.push({ description: "metrics (IPv4)", protocol: "tcp", fromPort: SCRAPE_PORTS.from, toPort: SCRAPE_PORTS.to, cidrBlocks: scrape.ipv4 });
    if (scrape.ipv6.length) ingress.push({ description: "metrics (IPv6)", protocol: "tcp", fromPort: SCRAPE_PORTS.from, toPort: SCRAPE_PORTS.to, ipv6CidrBlocks: scrape.ipv6 });
    this.awsGroups.set(key, new ec2.SecurityGroup(`${key}-ssh`, {
      region,
      // The description is immutable in EC2: changing it would replace the group.
      description: "runner-fleet hosts: SSH from admin networks",
      vpcId,
      ingress,
      egress: [{ description: "all outbound", protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: [ANYWHERE.ipv4], ipv6CidrBlocks: [ANYWHERE.ipv6] }],
      tags,
    }, { parent: this }));
  }

  /** The region's security group and key pair for an AWS host of the model. */
  aws(host: Pick<AwsHost, "name" | "region" | "subnetId">): AwsNetwork {
    const group = this.awsGroups.get(awsGroupKey(host));
    if (!group) throw new Error(`hosts.${host.name}: no AWS network for region ${host.region} (the host is not in the model SharedNetworks was built from)`);
    const keyPair = this.awsKeys.get(host.region);
    return { securityGroupId: group.id, ...(keyPair ? { keyName: keyPair.keyName } : {}) };
  }

  // ---------------------------------------------------------------------------------------------
  // Azure

  private createAzure(location: string, model: FleetModel, sources: SshSources, tags: Record<string, string>): AzureNetwork {
    const opts = { parent: this };
    // Fixed names inside the group; the group's name carries stack and location, so stacks never clash.
    const groupName = `runner-fleet-${model.stack}-${location}`;
    const group = new resources.ResourceGroup(`${location}-rg`, { resourceGroupName: groupName, location, tags }, opts);
    // The known name, carried through the group's id so children wait for the group.
    const resourceGroupName = group.id.apply(() => groupName);
    // Azure rejects a rule that mixes IPv4 and IPv6 prefixes: one rule per family.
    const families: Array<[string, string[]]> = [["ipv4", sources.ipv4], ["ipv6", sources.ipv6]];
    const securityRules = families.filter(([, list]) => list.length > 0).map(([family, list], i) => ({
      name: `ssh-${family}`,
      priority: 100 + i * 10,
      direction: "Inbound",
      access: "Allow",
      protocol: "Tcp",
      sourcePortRange: "*",
      sourceAddressPrefixes: list,
      destinationPortRange: "22",
      destinationAddressPrefix: "*",
    }));
    const scrape = monitoringSources(model);
    const scrapeFamilies: Array<[string, string[]]> = [["ipv4", scrape.ipv4], ["ipv6", scrape.ipv6]];
    securityRules.push(...scrapeFamilies.filter(([, list]) => list.length > 0).map(([family, list], i) => ({
      name: `metrics-${family}`,
      priority: 200 + i * 10,
      direction: "Inbound",
      access: "Allow",
      protocol: "Tcp",
      sourcePortRange: "*",
      sourceAddressPrefixes: list,
      destinationPortRange: SCRAPE_RANGE,
      destinationAddressPrefix: "*",
    })));
    const nsg = new network.NetworkSecurityGroup(`${location}-ssh`, {
      resourceGroupName,
      networkSecurityGroupName: "ssh",
      location,
      securityRules,
      tags,
    }, opts);
    const vnet = new network.VirtualNetwork(`${location}-vnet`, {
      resourceGroupName,
      virtualNetworkName: "runner-fleet",
      location,
      addressSpace: { addressPrefixes: ["10.42.0.0/16"] },
      tags,
    }, opts);
    const subnet = new network.Subnet(`${location}-hosts`, {
      resourceGroupName,
      virtualNetworkName: vnet.id.apply(() => "runner-fleet"),
      subnetName: "hosts",
      addressPrefix: "10.42.0.0/24",
      // On the subnet, not per NIC: one NSG per location covers every host.
      networkSecurityGroup: { id: nsg.id },
    }, opts);
    return { resourceGroupName, subnetId: subnet.id };
  }

  /** The location's resource group and subnet. */
  azure(location: string): AzureNetwork {
    const net = this.azureNets.get(location);
    if (!net) throw new Error(`no Azure network for location ${location} (no host of the model is there)`);
    return net;
  }

  // ---------------------------------------------------------------------------------------------
  // Hetzner Cloud

  private createHetzner(model: FleetModel, sources: SshSources): void {
    if (this.hetznerFirewall) return;
    const labels = { fleet: hetznerLabel("runner-fleet"), stack: hetznerLabel(model.stack) };
    // Without outbound rules Hetzner allows all outbound traffic.
    this.hetznerFirewall = new hcloud.Firewall("hetzner-ssh", {
      labels,
      rules: cidrRules(sources).map((sourceIps) => ({
        description: sourceIps[0].includes(":") ? "SSH (IPv6)" : "SSH (IPv4)",
        direction: "in",
        protocol: "tcp",
        port: "22",
        sourceIps,
      })).concat(cidrRules(monitoringSources(model)).map((sourceIps) => ({
        description: sourceIps[0].includes(":") ? "metrics (IPv6)" : "metrics (IPv4)",
        direction: "in",
        protocol: "tcp",
        port: SCRAPE_RANGE,
        sourceIps,
      }))),
    }, { parent: this });
    // Hetzner refuses the same public key twice in one project: one key, shared by every server,
    // and a stack sharing the project with another names that one's key instead (ssh.hetznerKey).
    this.hetznerKeyId = model.ssh.hetznerKey
      ? pulumi.output(model.ssh.hetznerKey)
      : new hcloud.SshKey("hetzner-ssh", { name: sshKeyName(model.stack), publicKey: model.ssh.authorizedKeys[0], labels }, { parent: this }).id;
  }

  /** The project's firewall and SSH key, and the host's placement group. */
  hetzner(host: { name: string; placementGroup?: string }): HetznerNetwork {
    if (!this.hetznerFirewall || !this.hetznerKeyId) throw new Error(`hosts.${host.name}: no Hetzner network (the host is not in the model)`);
    const group = host.placementGroup ? this.placementGroups.get(host.placementGroup) : undefined;
    if (host.placementGroup && !group) throw new Error(`hosts.${host.name}: no placement group ${host.placementGroup}`);
    return {
      firewallId: this.hetznerFirewall.id.apply(toNumber),
      sshKeyId: this.hetznerKeyId,
      ...(group ? { placementGroupId: group.id.apply(toNumber) } : {}),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // DigitalOcean

  private createDigitalOcean(region: string, model: FleetModel, sources: SshSources): void {
    const opts = { parent: this };
    // DigitalOcean refuses a public key already in the account, as Hetzner does: ssh.digitaloceanKey
    // names another stack's key instead.
    this.doKeyId ??= model.ssh.digitaloceanKey
      ? pulumi.output(model.ssh.digitaloceanKey)
      : new digitalocean.SshKey("digitalocean-ssh", { name: sshKeyName(model.stack), publicKey: model.ssh.authorizedKeys[0] }, opts).id;
    const vpc = new digitalocean.Vpc(`${region}-vpc`, { region, description: `runner-fleet ${model.stack} hosts in ${region}` }, opts);
    // Firewalls attach by tag, so the shared firewall needs no list of droplets.
    const tag = new digitalocean.Tag(`${region}-hosts`, { name: digitalOceanTag(`runner-fleet-${model.stack}-${region}`) }, opts);
    const everywhere = [ANYWHERE.ipv4, ANYWHERE.ipv6];
    new digitalocean.Firewall(`${region}-ssh`, {
      tags: [tag.name],
      inboundRules: [
        ...cidrRules(sources).map((sourceAddresses) => ({ protocol: "tcp", portRange: "22", sourceAddresses })),
        ...cidrRules(monitoringSources(model)).map((sourceAddresses) => ({ protocol: "tcp", portRange: SCRAPE_RANGE, sourceAddresses })),
      ],
      outboundRules: [
        { protocol: "tcp", portRange: "1-65535", destinationAddresses: everywhere },
        { protocol: "udp", portRange: "1-65535", destinationAddresses: everywhere },
        { protocol: "icmp", destinationAddresses: everywhere },
      ],
    }, opts);
    this.doNets.set(region, { vpc, tag });
  }

  /** The region's VPC and firewall tag, and the account's SSH key. */
  digitalocean(host: { name: string; region: string }): DigitalOceanNetwork {
    const net = this.doNets.get(host.region);
    if (!net || !this.doKeyId) throw new Error(`hosts.${host.name}: no DigitalOcean network for region ${host.region} (the host is not in the model)`);
    return { vpcId: net.vpc.id, firewallTag: net.tag.name, sshKeyId: this.doKeyId };
  }
}
