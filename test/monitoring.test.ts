// Monitoring from the stack and on the hosts: the prometheusTargets output (file_sd), the cloud
// firewall rules for monitoring.allowCidrs (real `npm run plan`), nix/modules/monitoring.nix
// (its nftables rules checked by `nft -c`, its exporter config), and the config key.
import { describe, it, expect, beforeAll } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MONITORING, renderTargets } from "../components/monitoring";
import { baseConfig, modelFrom, planJson, ROOT, runPlan, writeStackFile, type PlanDoc } from "./support/fixtures";

const IMAGES = {
  aws: { x86_64: { path: "/nix/store/8qp8fwyrn2m1ajzgcddwn7iz8imnckfn-nixos-amazon-image-25.11-x86_64-linux" } },
  azure: { x86_64: { path: "/nix/store/g24mi45nbl82xjagif45annhc6wjjj5h-nixos-azure-image-25.11-x86_64-linux" } },
};

function fleetConfig(allowCidrs?: string[]) {
  const cfg = baseConfig();
  cfg.images = IMAGES;
  cfg.hosts = {
    "aws-metal": { provider: "aws", instanceType: "c7i.metal-24xl", roles: ["fireactions"], pools: ["large", "small"] },
    "az-gitea": { provider: "azure", size: "Standard_B2s", roles: ["gitea-runner"] },
    "hz-cache": { provider: "hetzner", serverType: "cx22", location: "fsn1", roles: ["cache"] },
    "do-forgejo": { provider: "digitalocean", size: "s-2vcpu-4gb", region: "fra1", roles: ["forgejo-runner"] },
    onprem: { provider: "existing", address: "192.0.2.20", privateAddress: "10.9.0.20", arch: "x86_64", vcpus: 64, memoryMib: 262144, kvm: true, roles: ["fireactions"], pools: ["large"] },
  };
  if (allowCidrs) cfg.monitoring = { allowCidrs };
  return cfg;
}

describe("prometheusTargets (file_sd)", () => {
  const model = modelFrom(fleetConfig());
  const addresses = Object.fromEntries(model.hosts.map((h, i) => [h.name, { public: `203.0.113.${i + 1}`, private: h.provider === "hetzner" ? null : `10.0.0.${i + 1}` }]));

  it("per host: node exporter and ours; fireactions hosts add the relayed fireactions and scaler metrics", () => {
    const groups = renderTargets(model, addresses);
    const of = (host: string) => groups.filter((g) => g.labels.host === host).map((g) => [g.labels.exporter, g.targets[0], g.labels.__metrics_path__]);
    const metalAddr = addresses["aws-metal"].private;
    expect(of("aws-metal")).toEqual([
      ["node", `${metalAddr}:${MONITORING.nodeExporterPort}`, undefined],
      ["runner-fleet", `${metalAddr}:${MONITORING.exporterPort}`, undefined],
      ["fireactions", `${metalAddr}:${MONITORING.exporterPort}`, "/metrics/fireactions"],
      ["scaler", `${metalAddr}:${MONITORING.exporterPort}`, "/metrics/scaler"],
    ]);
    // No private address: the public one, which is where the exporters bind then.
    expect(of("hz-cache").map((t) => t[1])).toEqual([`${addresses["hz-cache"].public}:9100`, `${addresses["hz-cache"].public}:9101`]);
  });

  it("labels: stack, host, provider, region, roles and pools", () => {
    const groups = renderTargets(model, addresses);
    const metal = groups.find((g) => g.labels.host === "aws-metal")!;
    expect(metal.labels).toEqual({ stack: "test", host: "aws-metal", provider: "aws", region: "eu-central-1", roles: "fireactions", pools: "large,small", exporter: "node" });
    expect(groups.find((g) => g.labels.host === "az-gitea")!.labels.region).toBe("westeurope");
    expect(groups.find((g) => g.labels.host === "do-forgejo")!.labels.region).toBe("fra1");
    expect(groups.find((g) => g.labels.host === "onprem")!.labels.region).toBe("");
  });

  it("IPv6 addresses are bracketed; a host without an address is an error, not a bad target", () => {
    const v6 = renderTargets(model, { ...addresses, onprem: { public: "2001:db8::20", private: null } });
    expect(v6.find((g) => g.labels.host === "onprem")!.targets).toEqual(["[2001:db8::20]:9100"]);
    const { onprem: _, ...missing } = addresses;
    expect(() => renderTargets(model, missing)).toThrow(/no address for host onprem/);
  });

  it("is what promtool accepts as a file_sd file in a config", () => {
    const dir = mkdtempSync(join(tmpdir(), "rf-targets-"));
    writeFileSync(join(dir, "targets.json"), JSON.stringify(renderTargets(model, addresses)));
    writeFileSync(join(dir, "prometheus.yml"), `scrape_configs:\n  - job_name: runner-fleet\n    file_sd_configs:\n      - files: [${JSON.stringify(join(dir, "targets.json"))}]\n`);
    const r = spawnSync("promtool", ["check", "config", join(dir, "prometheus.yml")], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});

describe("the plan: output and cloud firewalls", () => {
  let open: PlanDoc;
  let closed: PlanDoc;
  beforeAll(async () => {
    [open, closed] = await Promise.all([planJson(fleetConfig(["192.0.2.0/24", "2001:db8:9::/48"])), planJson(fleetConfig())]);
  }, 120_000);
  const one = (doc: PlanDoc, type: string) => doc.resources.filter((r) => r.type === type).map((r) => r.inputs);

  it("exports prometheusTargets for every host", () => {
    const hosts = new Set((open.outputs.prometheusTargets as Array<{ labels: { host: string } }>).map((g) => g.labels.host));
    expect([...hosts].sort()).toEqual(["aws-metal", "az-gitea", "do-forgejo", "hz-cache", "onprem"]);
  });

  it("AWS, Azure, Hetzner and DigitalOcean open 9100-9101 to monitoring.allowCidrs only, per IP family", () => {
    const [sg] = one(open, "aws:ec2/securityGroup:SecurityGroup");
    expect(sg.ingress.filter((r: any) => r.fromPort === 9100)).toEqual([
      { description: "metrics (IPv4)", protocol: "tcp", fromPort: 9100, toPort: 9101, cidrBlocks: ["192.0.2.0/24"] },
      { description: "metrics (IPv6)", protocol: "tcp", fromPort: 9100, toPort: 9101, ipv6CidrBlocks: ["2001:db8:9::/48"] },
    ]);
    const [nsg] = one(open, "azure-native:network:NetworkSecurityGroup");
    expect(nsg.securityRules.filter((r: any) => r.name.startsWith("metrics")).map((r: any) => [r.name, r.destinationPortRange, r.sourceAddressPrefixes, r.priority]))
      .toEqual([["metrics-ipv4", "9100-9101", ["192.0.2.0/24"], 200], ["metrics-ipv6", "9100-9101", ["2001:db8:9::/48"], 210]]);
    const [hz] = one(open, "hcloud:index/firewall:Firewall");
    expect(hz.rules.filter((r: any) => r.port === "9100-9101").map((r: any) => r.sourceIps)).toEqual([["192.0.2.0/24"], ["2001:db8:9::/48"]]);
    const [dofw] = one(open, "digitalocean:index/firewall:Firewall");
    expect(dofw.inboundRules.filter((r: any) => r.portRange === "9100-9101").map((r: any) => r.sourceAddresses)).toEqual([["192.0.2.0/24"], ["2001:db8:9::/48"]]);
  });

  it("without allowCidrs no cloud opens a metrics port", () => {
    const text = JSON.stringify(closed.resources.filter((r) => /securityGroup|NetworkSecurityGroup|firewall:Firewall/.test(r.type)).map((r) => r.inputs));
    expect(text).not.toMatch(/9100|metrics/);
  });

  it("puts allowCidrs into inventory.json for nix/", () => {
    expect(JSON.parse(open.outputs.inventory).monitoring).toEqual({ allowCidrs: ["192.0.2.0/24", "2001:db8:9::/48"] });
    expect(JSON.parse(closed.outputs.inventory).monitoring).toEqual({ allowCidrs: [] });
  });

  it("refuses a bad CIDR by key path before anything exists", async () => {
    const r = await runPlan(["--config", writeStackFile(fleetConfig(["192.0.2.7/24", "nonsense"]))]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^runner-fleet:monitoring\.allowCidrs\[0\]: .*$/m);
    expect(r.stderr).toMatch(/^runner-fleet:monitoring\.allowCidrs\[1\]: .*$/m);
  }, 60_000);
});

// nix/modules/monitoring.nix through the stand-in lib (test/support/nix-modules.nix).
function moduleEval(inventoryPatch: Record<string, unknown>, hostName: string, expr: string, extra = ""): any {
  const dir = mkdtempSync(join(tmpdir(), "rf-mon-nix-"));
  const inv = { ...JSON.parse(readFileSync(join(ROOT, "nix", "inventory.example.json"), "utf8")), ...inventoryPatch };
  writeFileSync(join(dir, "inventory.json"), JSON.stringify(inv));
  const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "--expr", `
    let t = import ${join(ROOT, "test", "support", "nix-modules.nix")}; inventory = t.readInventory ${join(dir, "inventory.json")};
      r = t.call { file = ${join(ROOT, "nix", "modules", "monitoring.nix")}; inherit inventory; hostName = "${hostName}"; ${extra} };
    in ${expr}`], { env: { ...process.env, NIX_REMOTE: "dummy://", HOME: dir, NIX_CONFIG: "" }, encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

describe("nix/modules/monitoring.nix", () => {
  const inv = JSON.parse(readFileSync(join(ROOT, "nix", "inventory.example.json"), "utf8"));
  const withPrivate = Object.values(inv.hosts as Record<string, any>).find((h) => h.privateAddress)!;
  const withoutPrivate = Object.values(inv.hosts as Record<string, any>).find((h) => !h.privateAddress)!;

  it("node exporter on the private address (else the public one), nixpkgs' firewall opening off", () => {
    const node = moduleEval({}, withPrivate.name, "r.services.prometheus.exporters.node");
    expect(node).toEqual({ enable: true, listenAddress: withPrivate.privateAddress, port: 9100, openFirewall: false });
    expect(moduleEval({}, withoutPrivate.name, "r.services.prometheus.exporters.node.listenAddress")).toBe(withoutPrivate.address);
  });

  it("the exporter listens there too, with the host's secrets, units and (fireactions) relays", () => {
    const exec: string = moduleEval({}, withPrivate.name, "r.systemd.services.runner-fleet-exporter.serviceConfig.ExecStart");
    expect(exec).toContain(`--listen ${withPrivate.privateAddress}:9101`);
    const fa = Object.values(inv.hosts as Record<string, any>).find((h) => h.roles.includes("fireactions"))!;
    expect(exec).toContain("--config /etc/runner-fleet/exporter.json");
    // secrets.nix' consumers for a fireactions host (the stand-in does not merge modules).
    const cfg = JSON.parse(moduleEval({}, fa.name, `r.environment.etc."runner-fleet/exporter.json".text`, `consumers = [ "fireactions" ];`));
    expect(cfg.secrets).toEqual(fa.secrets.map((s: { file: string }) => s.file));
    expect(cfg.units).toEqual(["vault-agent-runner-fleet", "runner-fleet-secrets", "fireactions", "runner-fleet-scaler"]);
    expect(cfg.relays).toEqual({ fireactions: "http://127.0.0.1:8081/metrics", scaler: "http://127.0.0.1:9102/metrics" });
    expect(cfg.vault).toEqual({ address: inv.vault.address });
    const cache = Object.values(inv.hosts as Record<string, any>).find((h) => !h.roles.includes("fireactions"))!;
    expect(JSON.parse(moduleEval({}, cache.name, `r.environment.etc."runner-fleet/exporter.json".text`)).relays).toEqual({});
  });

  it("opens 9100 and 9101 to allowCidrs only, as rules nft accepts; with none, no rule", () => {
    const rules: string = moduleEval({ monitoring: { allowCidrs: ["192.0.2.0/24", "2001:db8:9::/48"] } }, withPrivate.name, "r.networking.firewall.extraInputRules");
    expect(rules.split("\n")).toEqual([
      'ip saddr { 192.0.2.0/24 } tcp dport { 9100, 9101 } accept comment "runner-fleet metrics"',
      'ip6 saddr { 2001:db8:9::/48 } tcp dport { 9100, 9101 } accept comment "runner-fleet metrics"',
    ]);
    expect(moduleEval({ monitoring: { allowCidrs: [] } }, withPrivate.name, "r.networking.firewall.extraInputRules")).toBe("");
    expect(moduleEval({}, withPrivate.name, "r.networking.firewall.extraInputRules")).toBe("");
    // nixpkgs appends extraInputRules to the input-allow chain of table inet nixos-fw.
    const dir = mkdtempSync(join(tmpdir(), "rf-mon-nft-"));
    writeFileSync(join(dir, "fw.nft"), `table inet nixos-fw {\n  chain input-allow {\n${rules}\n  }\n}\n`);
    const ok = spawnSync("nft", ["-c", "-f", join(dir, "fw.nft")], { encoding: "utf8" });
    expect(ok.status, ok.stderr).toBe(0);
  });
});
