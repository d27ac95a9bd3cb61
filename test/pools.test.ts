/**
 * Pools (presets, overrides, the pools.json document) and capacity, as pure functions, plus the
 * same rules seen through the config layer.
 */
import { describe, expect, it } from "vitest";
import { capacityOf, checkCapacity } from "../components/capacity";
import { ConfigError } from "../components/config";
import type { PoolModel } from "../components/model";
import { POOL_DEFAULTS, PRESETS, renderPoolsJson, resolvePool } from "../components/pools";
import { baseConfig, modelFrom } from "./support/fixtures";

const ORG = "acme";

function parsed(pools: PoolModel[]) {
  return JSON.parse(renderPoolsJson(pools)) as Array<Record<string, any>>;
}

describe("presets", () => {
  it.each([
    ["small", 1, 1024, 2, 1],
    ["medium", 2, 2048, 5, 2],
    ["large", 4, 4096, 10, 5],
  ] as const)("%s is %i vCPU, %i MiB, max %i, min %i", (size, vcpus, memoryMib, maxRunners, minRunners) => {
    expect(PRESETS[size]).toEqual({ vcpus, memoryMib, maxRunners, minRunners });
    const [doc] = parsed([resolvePool("p", { size }, ORG)]);
    expect(doc).toEqual({
      name: "p",
      maxRunners,
      minRunners,
      runner: {
        name: "runner",
        image: POOL_DEFAULTS.image,
        organization: ORG,
        labels: ["self-hosted", "fireactions", size],
        groupId: 1,
      },
      firecracker: { vcpuCount: vcpus, memSizeMib: memoryMib, kernelArgs: "console=ttyS0 reboot=k panic=1 pci=off" },
    });
  });
});

describe("resolvePool", () => {
  it("lets every explicit field override the preset", () => {
    const pool = resolvePool("custom", {
      size: "large",
      maxRunners: 3,
      minRunners: 0,
      vcpus: 6,
      memoryMib: 3000,
      labels: ["gpu"],
      runnerName: "worker",
      image: "registry.example/img:1",
      organization: "other-org",
      groupId: 7,
      kernelArgs: "console=ttyS0",
    }, ORG);
    const [doc] = parsed([pool]);
    expect(doc).toEqual({
      name: "custom",
      maxRunners: 3,
      minRunners: 0,
      runner: { name: "worker", image: "registry.example/img:1", organization: "other-org", labels: ["gpu", "large"], groupId: 7 },
      firecracker: { vcpuCount: 6, memSizeMib: 3000, kernelArgs: "console=ttyS0" },
    });
  });

  it("caps the preset's minimum at an explicit smaller maximum", () => {
    const pool = resolvePool("p", { size: "large", maxRunners: 2 }, ORG);
    expect([pool.maxRunners, pool.minRunners]).toEqual([2, 2]);
    expect(resolvePool("p", { size: "large", maxRunners: 0 }, ORG).minRunners).toBe(0);
  });

  it("adds the size to the labels once, keeping the user's order", () => {
    expect(resolvePool("p", { size: "small", labels: ["linux", "x64"] }, ORG).labels).toEqual(["linux", "x64", "small"]);
    expect(resolvePool("p", { size: "small", labels: ["small", "linux"] }, ORG).labels).toEqual(["small", "linux"]);
  });

  it("does not share the default label list between pools", () => {
    const a = resolvePool("a", { size: "small" }, ORG);
    a.labels.push("mutated");
    expect(resolvePool("b", { size: "small" }, ORG).labels).toEqual(["self-hosted", "fireactions", "small"]);
    expect(POOL_DEFAULTS.labels).toEqual(["self-hosted", "fireactions"]);
  });
});

describe("renderPoolsJson", () => {
  const pools = [resolvePool("zeta", { size: "small" }, ORG), resolvePool("alpha", { size: "large" }, ORG), resolvePool("mid", { size: "medium" }, ORG)];

  it("sorts pools by name whatever the input order", () => {
    expect(parsed(pools).map((p) => p.name)).toEqual(["alpha", "mid", "zeta"]);
    expect(renderPoolsJson([...pools].reverse())).toBe(renderPoolsJson(pools));
  });

  it("sorts by code point, not locale (uppercase is impossible in names, digits sort first)", () => {
    const names = ["b-2", "b", "a10", "a9"].map((n) => resolvePool(n, { size: "small" }, ORG));
    expect(parsed(names).map((p) => p.name)).toEqual(["a10", "a9", "b", "b-2"]);
  });

  it("is byte-for-byte deterministic: two-space indent, trailing newline, fixed key order", () => {
    const text = renderPoolsJson(pools);
    expect(renderPoolsJson(pools.map((p) => ({ ...p })))).toBe(text);
    expect(text.endsWith("]\n")).toBe(true);
    expect(text.endsWith("\n\n")).toBe(false);
    expect(text).toBe(`${JSON.stringify(JSON.parse(text), null, 2)}\n`);
    const [first] = parsed(pools);
    expect(Object.keys(first)).toEqual(["name", "maxRunners", "minRunners", "runner", "firecracker"]);
    expect(Object.keys(first.runner)).toEqual(["name", "image", "organization", "labels", "groupId"]);
    expect(Object.keys(first.firecracker)).toEqual(["vcpuCount", "memSizeMib", "kernelArgs"]);
    // Key order does not depend on how the model object was built.
    const shuffled = Object.fromEntries(Object.entries(pools[0]).reverse()) as unknown as PoolModel;
    expect(renderPoolsJson([shuffled, pools[1], pools[2]])).toBe(text);
  });

  it("always writes groupId: GitHub's default group 1 unless set (fireactions sends 0 for none)", () => {
    const text = renderPoolsJson([resolvePool("a", { size: "small" }, ORG), resolvePool("b", { size: "small", groupId: 3 }, ORG)]);
    const [a, b] = JSON.parse(text);
    expect(a.runner.groupId).toBe(1);
    expect(b.runner.groupId).toBe(3);
  });

  it("never writes imagePullPolicy: fireactions v0.4.0 does not read it", () => {
    const text = renderPoolsJson([resolvePool("a", { size: "small" }, ORG)]);
    expect(text).not.toMatch(/imagePullPolicy|PullPolicy/i);
  });

  it("renders an empty array for a host without pools", () => {
    expect(renderPoolsJson([])).toBe("[]\n");
  });
});

describe("pools through the config layer", () => {
  it("applies presets and overrides from stack config", () => {
    const cfg = baseConfig();
    cfg.pools = { tiny: { size: "small", maxRunners: 1, labels: ["linux"] }, big: { size: "large", groupId: 9 } };
    cfg.hosts.metal.pools = ["tiny", "big"];
    const model = modelFrom(cfg);
    expect(model.pools.tiny).toMatchObject({ maxRunners: 1, minRunners: 1, vcpus: 1, memoryMib: 1024, labels: ["linux", "small"], organization: "acme" });
    expect(model.pools.big).toMatchObject({ maxRunners: 10, minRunners: 5, vcpus: 4, memoryMib: 4096, groupId: 9 });
    expect(parsed(model.hosts[0].pools.map((p) => model.pools[p])).map((p) => p.name)).toEqual(["big", "tiny"]);
  });

  it("rejects a minimum above the maximum by key path", () => {
    const cfg = baseConfig();
    cfg.pools.small = { size: "small", maxRunners: 1, minRunners: 2 };
    expect(() => modelFrom(cfg)).toThrow(/runner-fleet:pools\.small\.minRunners: 2 is more than maxRunners \(1\)/);
  });
});

// -------------------------------------------------------------------------------------------

describe("capacity", () => {
  const reserve = { reserveVcpus: 1, reserveMemoryMib: 2048 };
  const small = resolvePool("small", { size: "small" }, ORG); // 2 x 1 vCPU, 2 x 1024 MiB
  const large = resolvePool("large", { size: "large" }, ORG); // 10 x 4 vCPU, 10 x 4096 MiB

  it("sums every pool at maxRunners and subtracts the reserve", () => {
    expect(capacityOf({ vcpus: 64, memoryMib: 131072 }, [small, large], reserve)).toEqual({
      runnerVcpus: 2 + 40,
      runnerMemoryMib: 2048 + 40960,
      availableVcpus: 63,
      availableMemoryMib: 129024,
      maxRunners: 12,
    });
  });

  it("fits: no findings, also exactly at the limit", () => {
    expect(checkCapacity({ vcpus: 64, memoryMib: 131072 }, [small, large], reserve)).toEqual([]);
    // small needs 2 vCPU / 2048 MiB: exactly what remains of 3 vCPU / 4096 MiB after the reserve.
    expect(checkCapacity({ vcpus: 3, memoryMib: 4096 }, [small], reserve)).toEqual([]);
  });

  it("reports too few vCPUs, with the breakdown per pool", () => {
    const findings = checkCapacity({ vcpus: 40, memoryMib: 262144 }, [small, large], reserve);
    expect(findings).toEqual(["need 42 vCPUs at maxRunners (small 2 x 1 + large 10 x 4) but the host has 39 after reserving 1 of 40"]);
  });

  it("reports too little memory", () => {
    const findings = checkCapacity({ vcpus: 96, memoryMib: 32768 }, [large], reserve);
    expect(findings).toEqual(["need 40960 MiB at maxRunners (large 10 x 4096) but the host has 30720 MiB after reserving 2048 of 32768"]);
  });

  it("reports both when both are short", () => {
    expect(checkCapacity({ vcpus: 4, memoryMib: 4096 }, [large], reserve)).toHaveLength(2);
  });

  it("applies the reserve: the same pools fit without it and not with it", () => {
    const host = { vcpus: 2, memoryMib: 2048 };
    expect(checkCapacity(host, [small], { reserveVcpus: 0, reserveMemoryMib: 0 })).toEqual([]);
    expect(checkCapacity(host, [small], { reserveVcpus: 1, reserveMemoryMib: 0 })).toEqual([
      "need 2 vCPUs at maxRunners (small 2 x 1) but the host has 1 after reserving 1 of 2",
    ]);
    expect(checkCapacity(host, [small], { reserveVcpus: 0, reserveMemoryMib: 1 })).toHaveLength(1);
  });

  it("never reports negative availability and ignores hosts without pools", () => {
    expect(capacityOf({ vcpus: 1, memoryMib: 512 }, [], reserve)).toMatchObject({ availableVcpus: 0, availableMemoryMib: 0, maxRunners: 0 });
    expect(checkCapacity({ vcpus: 1, memoryMib: 512 }, [], reserve)).toEqual([]);
  });

  it("fails the config by key path when a host's pools do not fit, honouring capacity.*", () => {
    const cfg = baseConfig();
    // c8i.xlarge: 4 vCPU / 8 GiB; medium at maxRunners: 10 vCPU / 10240 MiB.
    cfg.hosts = { nested: { provider: "aws", instanceType: "c8i.xlarge", roles: ["fireactions"], pools: ["medium"] } };
    let error: unknown;
    try {
      modelFrom(cfg);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.filter((p) => p.startsWith("runner-fleet:hosts.nested.pools:"));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/need 10 vCPUs .* host has 3 after reserving 1 of 4/);
    expect(problems[1]).toMatch(/need 10240 MiB .* host has 6144 MiB after reserving 2048 of 8192/);

    cfg.pools.medium = { size: "medium", maxRunners: 1 };
    cfg.capacity = { reserveVcpus: 2, reserveMemoryMib: 6144 };
    expect(modelFrom(cfg).hosts[0].name).toBe("nested");
    cfg.capacity = { reserveVcpus: 3, reserveMemoryMib: 6144 };
    expect(() => modelFrom(cfg)).toThrow(/hosts\.nested\.pools: need 2 vCPUs .* host has 1 after reserving 3 of 4/);
  });
});
