// The rollout's width against the engine's --parallel (README "Rollout time"): a wave needs its
// switches and the previous wave's seeds and pool pushes at once.
import { describe, expect, it } from "vitest";
import { parallelWarning } from "../components/deploy-commands";

describe("parallelWarning", () => {
  it("says nothing when the engine's limit is unknown (offline plan) or at least 2 x batchSize", () => {
    expect(parallelWarning(4, 12, undefined)).toBeUndefined();
    expect(parallelWarning(4, 12, 8)).toBeUndefined();
    expect(parallelWarning(50, 1000, 100)).toBeUndefined();
  });

  it("names the flag and the value that lets a whole wave run, when the limit would queue part of it", () => {
    expect(parallelWarning(50, 1000, 8)).toBe(
      "deploy.batchSize is 50 but the engine runs only 8 operations at once: part of each wave waits. Run pulumi up --parallel 100 (or set PULUMI_PARALLEL=100)");
    expect(parallelWarning(5, 12, 8)).toMatch(/--parallel 10 /);
  });

  it("counts only the hosts there are: a batchSize above the fleet's size needs no more", () => {
    expect(parallelWarning(50, 3, 8)).toBeUndefined();
    expect(parallelWarning(50, 5, 8)).toMatch(/--parallel 10 /);
  });
});
