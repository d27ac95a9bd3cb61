/**
 * The bench's synthetic fleets are valid fleets (the program would plan them), mix every
 * provider and role, and respect KVM and capacity; the helpers that read plan output, attribute
 * resources to hosts, choose the floor's modules and summarise profiles do what they claim.
 */
import { describe, expect, it } from "vitest";
import { lookupInstance } from "../components/catalog";
import { capacityOf } from "../components/capacity";
import { PROVIDERS, ROLES } from "../components/model";
import { benchFleet, benchHostName, benchStorePath } from "../scripts/bench-fleet";
import {
  categoryOf, classOf, median, modulesToLoad, parseGnuTime, planFieldOf, pulumiImports, resourcesPerHost, summarisePlanLines, summariseProfile,
} from "../scripts/bench-lib";
import { modelFrom, ROOT } from "./support/fixtures";

describe("benchFleet", () => {
  const models = new Map([1, 10, 100, 1000].map((n) => [n, modelFrom(benchFleet(n))]));

  it("builds a valid fleet model of exactly N hosts at every bench size", () => {
    for (const [n, model] of models) expect(model.hosts).toHaveLength(n);
  });

  it("mixes every provider and every role from 10 hosts up, in even proportions", () => {
    for (const n of [10, 100, 1000]) {
      const model = models.get(n)!;
      expect(new Set(model.hosts.map((h) => h.provider))).toEqual(new Set(PROVIDERS));
      expect(new Set(model.hosts.flatMap((h) => h.roles))).toEqual(new Set(ROLES));
      expect(new Set(model.hosts.map((h) => h.arch))).toEqual(new Set(["x86_64", "aarch64"]));
      const fireactions = model.hosts.filter((h) => h.roles.includes("fireactions")).length;
      expect(fireactions).toBe(n * 0.6);
    }
  });

  it("puts fireactions only on KVM instance types from the catalog, with pools that fit", () => {
    const model = models.get(1000)!;
    for (const host of model.hosts.filter((h) => h.roles.includes("fireactions"))) {
      expect(host.kvm, host.name).toBe(true);
      if (host.provider !== "existing") {
        const type = host.provider === "aws" ? host.instanceType : host.provider === "hetzner" ? host.serverType : host.size;
        expect(["metal", "nested"], host.name).toContain(lookupInstance(host.provider, type)?.kvm);
      }
      const c = capacityOf(host, host.pools.map((p) => model.pools[p]), model.capacity);
      expect(c.runnerVcpus).toBeLessThanOrEqual(c.availableVcpus);
      expect(c.runnerMemoryMib).toBeLessThanOrEqual(c.availableMemoryMib);
    }
  });

  it("is deterministic, and configures exactly the images its hosts boot from", () => {
    expect(benchFleet(100)).toEqual(benchFleet(100));
    expect(Object.keys(benchFleet(1).images)).toEqual(["aws"]);
    expect(models.get(10)!.images.map((i) => `${i.cloud}.${i.arch}`).sort()).toEqual(
      ["aws.aarch64", "aws.x86_64", "azure.x86_64", "digitalocean.x86_64", "hetzner.x86_64"],
    );
    expect(models.get(10)!.warnings.filter((w) => !w.includes("is not built here"))).toEqual([]);
  });

  it("names hosts so that no host name is another's prefix followed by a letter or digit", () => {
    const names = Object.keys(benchFleet(1000).hosts);
    expect(new Set(names).size).toBe(1000);
    expect(benchHostName("aws", 7)).toBe("aws-0007");
    expect(benchHostName("aws", 12345, 5)).toBe("aws-12345");
    expect(benchStorePath("aws", "aarch64")).toMatch(/^\/nix\/store\/[0-9a-df-np-sv-z]{32}-.*-aarch64-linux$/);
  });

  it("rejects a size that is not a positive integer", () => {
    expect(() => benchFleet(0)).toThrow(/positive integer/);
    expect(() => benchFleet(1.5)).toThrow(/positive integer/);
  });
});

describe("plan output", () => {
  const doc = {
    resources: [
      { urn: "urn:a", type: "runner-fleet:index:Fleet", name: "fleet", inputs: {} },
      { urn: "urn:b", type: "aws:ec2/instance:Instance", name: "aws-0001", inputs: { nested: { name: "not-a-resource", type: "x", urn: "u" } } },
      { urn: "urn:c", type: "command:remote:Command", name: "aws-0001-switch", inputs: { text: "line\n      \"name\": \"fake\"" } },
    ],
    outputs: { name: "ignored" },
  };
  const lines = JSON.stringify(doc, null, 2).split("\n");

  it("reads each resource's own name and type, not nested inputs or escaped text", () => {
    const s = summarisePlanLines(lines);
    expect(s.names).toEqual(["fleet", "aws-0001", "aws-0001-switch"]);
    expect(s).toMatchObject({ total: 3, components: 1, custom: 2 });
    expect(planFieldOf('      "name": "a\\"b",')).toEqual({ field: "name", value: 'a"b' });
    expect(planFieldOf('        "name": "deeper",')).toBeUndefined();
  });

  it("attributes resources to the host they are named after, by whole name segments", () => {
    const counts = resourcesPerHost(["aws-0001", "aws-0001-switch", "aws-00010-x", "aws-0001a", "fleet"], ["aws-0001", "aws-00010"]);
    expect(Object.fromEntries(counts)).toEqual({ "aws-0001": 2, "aws-00010": 1 });
  });
});

describe("floor modules", () => {
  it("loads azure-native by subpath and reads providers' submodules from the registered types", () => {
    const loads = modulesToLoad(
      ["aws:ec2/instance:Instance", "azure-native:compute:VirtualMachine", "hcloud:index/server:Server", "runner-fleet:index:Fleet", "vault:kv/secretV2:SecretV2"],
      ["@pulumi/pulumi"],
    );
    expect(loads).toEqual([
      { specifier: "@pulumi/aws", property: "ec2" },
      { specifier: "@pulumi/azure-native/compute" },
      { specifier: "@pulumi/hcloud" },
      { specifier: "@pulumi/pulumi" },
      { specifier: "@pulumi/vault", property: "kv" },
    ]);
    expect(() => modulesToLoad([], ["@pulumi/azure-native"])).toThrow(/subpath/);
  });

  it("finds the SDK class of each provider resource type, and none for our components", () => {
    expect(classOf("aws:ec2/instance:Instance")).toEqual({ load: { specifier: "@pulumi/aws", property: "ec2" }, className: "Instance" });
    expect(classOf("azure-native:compute:VirtualMachine")).toEqual({ load: { specifier: "@pulumi/azure-native/compute" }, className: "VirtualMachine" });
    expect(classOf("hcloud:index/server:Server")).toEqual({ load: { specifier: "@pulumi/hcloud" }, className: "Server" });
    expect(classOf("pulumi:providers:vault")).toEqual({ load: { specifier: "@pulumi/vault" }, className: "Provider" });
    expect(classOf("runner-fleet:hosts:AwsHost")).toBeUndefined();
  });

  it("finds value imports of @pulumi packages and skips type-only ones", () => {
    const src = [
      'import * as pulumi from "@pulumi/pulumi";',
      'import type { Input } from "@pulumi/aws";',
      'import { Instance } from "@pulumi/aws/ec2";',
      'import * as compute from "@pulumi/azure-native/compute";',
      'const x = await import("@pulumi/command");',
    ].join("\n");
    expect(pulumiImports(src)).toEqual(["@pulumi/aws/ec2", "@pulumi/azure-native/compute", "@pulumi/command", "@pulumi/pulumi"]);
  });
});

describe("measurement helpers", () => {
  it("reads wall seconds and peak KiB from GNU time's last line", () => {
    expect(parseGnuTime("Command exited with non-zero status 1\n12.34 567890\n")).toEqual({ wallSeconds: 12.34, maxRssKib: 567890 });
    expect(() => parseGnuTime("garbage")).toThrow(/GNU time/);
  });

  it("takes medians", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });

  it("groups profile self time by where the code lives", () => {
    const at = (url: string, fn = "f") => ({ functionName: fn, url, lineNumber: 0 });
    const profile = {
      nodes: [
        { id: 1, callFrame: at(`file://${ROOT}/components/fleet.ts`, "render") },
        { id: 2, callFrame: at(`file://${ROOT}/node_modules/@pulumi/pulumi/output.js`, "apply") },
        { id: 3, callFrame: at(`file://${ROOT}/node_modules/@pulumi/aws/ec2/instance.js`) },
        { id: 4, callFrame: at("", "(garbage collector)") },
      ],
      samples: [1, 2, 2, 3, 4],
      timeDeltas: [1000, 2000, 2000, 500, 500],
    };
    const s = summariseProfile(profile, ROOT);
    expect(s.totalMs).toBe(6);
    expect(Object.fromEntries(s.byCategory.map((c) => [c.category, c.ms]))).toEqual({
      "@pulumi/pulumi (SDK)": 4, "runner-fleet (our code)": 1, "providers (@pulumi/aws)": 0.5, "V8: garbage collector": 0.5,
    });
    expect(s.topFunctions[0]).toMatchObject({ fn: "apply", ms: 4, where: "@pulumi/pulumi/output.js:1" });
    expect(categoryOf(`file://${ROOT}/node_modules/tsx/dist/x.cjs`, "f", ROOT)).toMatch(/tsx/);
    expect(categoryOf("node:internal/modules/cjs/loader", "f", ROOT)).toBe("node built-ins");
  });
});
