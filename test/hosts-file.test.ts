// runner-fleet:hostsFile: hosts from a file of the project, merged into runner-fleet:hosts, so a
// large fleet's config stays under the 128 KiB the whole stack config must fit in (PULUMI_CONFIG).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../components/config";
import { mergeHostsFile } from "../components/load";
import { baseConfig, modelFrom } from "./support/fixtures";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rf-hosts-file-"));
const write = (name: string, text: string) => (fs.writeFileSync(path.join(dir, name), text), name);
const problems = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("no ConfigError");
};

describe("mergeHostsFile", () => {
  it("adds the file's hosts to the inline ones and drops the key; the model is the same as inline", () => {
    const cfg = baseConfig();
    cfg.hosts["onprem-1"] = { provider: "existing", address: "192.0.2.10", arch: "x86_64", vcpus: 8, memoryMib: 16384, roles: ["cache"] };
    const [first, ...others] = Object.entries(cfg.hosts);
    expect(others.length).toBeGreaterThan(0);
    const file = write("hosts.yaml", others.map(([name, host]) => `${name}: ${JSON.stringify(host)}`).join("\n"));
    const merged = mergeHostsFile({ ...cfg, hosts: Object.fromEntries([first]), hostsFile: file }, dir);
    expect(merged.hostsFile).toBeUndefined();
    expect(Object.keys(merged.hosts as object).sort()).toEqual(Object.keys(cfg.hosts).sort());
    expect(modelFrom(merged).hosts).toEqual(modelFrom(cfg).hosts);
  });

  it("leaves a config without hostsFile untouched", () => {
    const cfg = baseConfig();
    expect(mergeHostsFile(cfg, dir)).toBe(cfg);
  });

  it("names the key for a missing file, a file that is no map, a host defined twice and a non-string value", () => {
    expect(problems(() => mergeHostsFile({ hosts: {}, hostsFile: "nope.yaml" }, dir))).toEqual(["runner-fleet:hostsFile: cannot read nope.yaml: ENOENT"]);
    expect(problems(() => mergeHostsFile({ hosts: {}, hostsFile: write("list.yaml", "- a\n- b\n") }, dir)))
      .toEqual(["runner-fleet:hostsFile: list.yaml must be a map of host name -> host, as runner-fleet:hosts"]);
    expect(problems(() => mergeHostsFile({ hosts: { a: {} }, hostsFile: write("dup.yaml", "a: {}\nb: {}\n") }, dir)))
      .toEqual(["runner-fleet:hostsFile: host a is also in runner-fleet:hosts"]);
    expect(problems(() => mergeHostsFile({ hosts: {}, hostsFile: 3 }, dir))).toEqual(["runner-fleet:hostsFile: must be a path to a YAML file of hosts"]);
  });
});
