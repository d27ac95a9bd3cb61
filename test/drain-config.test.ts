// Config of the drain and of test/boot deploys (#19): deploy.drainTimeoutMinutes,
// deploy.drainProceedOnTimeout, hosts.<name>.trial, validated before any resource.
import { describe, expect, it } from "vitest";
import { ConfigError } from "../components/config";
import { buildInventory } from "../components/inventory";
import { baseConfig, modelFrom } from "./support/fixtures";

function problemsOf(mutate: (c: Record<string, any>) => void): string[] {
  const c = baseConfig();
  mutate(c);
  try {
    modelFrom(c);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("drain and activation config", () => {
  it("defaults: 60 minutes, keep the jobs, no trial", () => {
    const model = modelFrom(baseConfig());
    expect(model.deploy).toMatchObject({ drainTimeoutMinutes: 60, drainProceedOnTimeout: false });
    expect(model.hosts.every((h) => h.trial === false)).toBe(true);
  });

  it("refuses a timeout outside 1..1440 and a non-boolean opt-in, naming the key", () => {
    expect(problemsOf((c) => { c.deploy = { drainTimeoutMinutes: 0 }; })).toEqual([expect.stringMatching(/^runner-fleet:deploy\.drainTimeoutMinutes: .*at least 1/)]);
    expect(problemsOf((c) => { c.deploy = { drainTimeoutMinutes: 1441 }; })[0]).toMatch(/^runner-fleet:deploy\.drainTimeoutMinutes: /);
    expect(problemsOf((c) => { c.deploy = { drainProceedOnTimeout: "yes" }; })[0]).toMatch(/^runner-fleet:deploy\.drainProceedOnTimeout: /);
  });

  it("refuses trial together with boot on one host, with every other problem at once", () => {
    const problems = problemsOf((c) => {
      c.hosts.metal.trial = true;
      c.hosts.metal.boot = true;
      c.deploy = { drainTimeoutMinutes: 0 };
    });
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringMatching(/^runner-fleet:hosts\.metal\.trial: cannot be combined with boot/),
      expect.stringMatching(/^runner-fleet:deploy\.drainTimeoutMinutes: /),
    ]));
  });

  it("the inventory carries the timeout to the hosts (forgejo-runner's shutdown_timeout)", () => {
    const c = baseConfig();
    c.deploy = { drainTimeoutMinutes: 45 };
    const model = modelFrom(c);
    const addresses = Object.fromEntries(model.hosts.map((h) => [h.name, { public: "192.0.2.1", private: null }]));
    expect(buildInventory(model, addresses).drain).toEqual({ timeoutMinutes: 45 });
  });
});

describe("RUNNER_FLEET_ACTIVATION: one run's activation", () => {
  it("takes test, boot or switch, and refuses anything else with one clear line", async () => {
    const { activationOverride } = await import("../components/deploy");
    expect(activationOverride(undefined)).toBeUndefined();
    expect(activationOverride("")).toBeUndefined();
    for (const a of ["test", "boot", "switch"]) expect(activationOverride(a)).toBe(a);
    expect(() => activationOverride("dry")).toThrow(/^RUNNER_FLEET_ACTIVATION: must be test, boot or switch, got "dry"$/);
  });
});
