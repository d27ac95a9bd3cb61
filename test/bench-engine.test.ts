// Pure parts of `npm run bench -- --engine`: the CLI's summary, /proc parsing, the process tree,
// the engine fleet (valid config, one loopback address per host, the edit's reach).
import { describe, expect, it } from "vitest";
import { parseSummary } from "../scripts/bench-engine";
import { engineFleet, hostsRunningEditedPool, loopbackAddress, EDITED_POOL } from "../scripts/bench-engine-fleet";
import { descendants, parseStat } from "../scripts/bench-engine-proc";
import { modelFrom, SSH_KEY } from "./support/fixtures";

describe("parseSummary", () => {
  it("reads the counts of a preview and of an update", () => {
    expect(parseSummary("Resources:\n    + 1010 to create\n\n")).toEqual({ "to create": 1010 });
    expect(parseSummary("Resources:\n    ~ 50 to update\n    960 unchanged\n")).toEqual({ "to update": 50, unchanged: 960 });
    expect(parseSummary("Resources:\n    1010 unchanged\n\nDuration: 17s\n")).toEqual({ unchanged: 1010 });
    expect(parseSummary("  + 3 created\n  +-1 replaced\n")).toEqual({ created: 3, replaced: 1 });
  });
});

describe("/proc", () => {
  it("parses stat lines whose command name holds spaces and parentheses", () => {
    const fields = ["S", "7", ...Array(9).fill("0"), "150", "50", "20", "10", ...Array(6).fill("0"), "1000"];
    const s = parseStat(42, `42 (a (b) c) ${fields.join(" ")}`)!;
    expect(s).toEqual({ pid: 42, ppid: 7, cpu: 2, childCpu: 0.3, rssBytes: 1000 * 4096 });
  });

  it("finds every descendant of the root and nothing else", () => {
    const p = (pid: number, ppid: number) => ({ pid, ppid, cpu: 0, childCpu: 0, rssBytes: 0 });
    const tree = descendants(10, [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(13, 10), p(20, 1), p(21, 20)]);
    expect(tree.map((s) => s.pid).sort()).toEqual([10, 11, 12, 13]);
  });
});

describe("engineFleet", () => {
  const opts = { hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMS2h8BA5KkfTs1AVBW+KzNVWOGAqW5r1NAY25uvw+QP", authorizedKey: SSH_KEY, vaultAddress: "http://127.0.0.1:8200", mount: "ci-10", authMount: "approle-10", batchSize: 4 };

  it("is a valid fleet of existing hosts on distinct loopback addresses", () => {
    const model = modelFrom(engineFleet({ ...opts, hosts: 300 }));
    expect(model.hosts).toHaveLength(300);
    expect(model.hosts.every((h) => h.provider === "existing")).toBe(true);
    const addresses = model.hosts.map((h) => (h as { address: string }).address);
    expect(new Set(addresses).size).toBe(300);
    expect(addresses.every((a) => a.startsWith("127."))).toBe(true);
    expect(loopbackAddress(255)).toBe("127.1.1.0");
  });

  it("runs the edited pool on the hosts hostsRunningEditedPool counts", () => {
    for (const n of [1, 10, 11]) {
      const cfg = engineFleet({ ...opts, hosts: n });
      const running = Object.values(cfg.hosts).filter((h: any) => h.pools.includes(EDITED_POOL)).length;
      expect(running).toBe(hostsRunningEditedPool(n));
    }
  });
});
