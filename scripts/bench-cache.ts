/**
 * The fleet cache's bench rows (npm run bench; `--cache-only` for these alone), with Debian's
 * Nix 2.8 on loopback:
 *
 * - substitution: a host fetching a closure from the fleet cache as nix/modules/fleet-cache.nix
 *   configures it (HTTP, signature checks, NARs uncompressed as Harmonia serves them). Floor, in
 *   the same run: the same closure copied store to store on the same disk (`nix copy` between
 *   two local stores: no HTTP, no signatures), the least any transfer of those paths costs.
 * - a cache that is down ahead of it: the same substitution with a dead substituter first (the
 *   connect-timeout and fallback the module sets), against the substitution alone.
 *
 * The deploy machine's bytes for a wave with and without the push are measured with real sshd
 * by test/cache-push.test.ts (it prints them).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { median, table } from "./bench-lib";
import { freePort } from "../test/support/free-port";
import { BUILD_CONF, buildClosure, generateKey, nix, realiseWithModule, serveDirectory, writeBinaryCache } from "../test/support/nix-cache";

/** Targets: substitution within this factor of the store-copy floor; a dead cache costs at most this many seconds more. */
const SUBSTITUTE_MAX_RATIO = 4;
const DOWN_MAX_EXTRA_SECONDS = 10;

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

export async function benchCache(opts: { work: string; paths?: number; kib?: number; runs?: number; log?: (s: string) => void }): Promise<{ lines: string[]; failures: number }> {
  const log = opts.log ?? (() => {});
  const paths = opts.paths ?? 50;
  const kib = opts.kib ?? 256;
  const runs = opts.runs ?? 3;
  const dir = fs.mkdtempSync(path.join(opts.work, "cache-"));
  const src = path.join(dir, "src");
  log(`cache bench: building a closure of ${paths} paths x ${kib} KiB ... `);
  const top = buildClosure(dir, src, paths, kib);
  const key = generateKey(dir, "cache-1");
  writeBinaryCache(dir, src, top, key.file, path.join(dir, "served"), "none");
  const server = await serveDirectory(path.join(dir, "served"));
  log("done\n");
  try {
    const floor: number[] = [];
    const ours: number[] = [];
    const down: number[] = [];
    for (let i = 0; i < runs; i++) {
      const dst = fs.mkdtempSync(path.join(dir, "floor-"));
      const started = process.hrtime.bigint();
      const r = nix(dir, ["nix", "copy", "--no-check-sigs", "--from", `local?root=${src}`, "--to", `local?root=${dst}`, top], { conf: BUILD_CONF });
      if (r.status !== 0) throw new Error(`store copy: ${r.stderr}`);
      floor.push(Number(process.hrtime.bigint() - started) / 1e9);
      const cache = { substituters: [{ url: server.url, publicKey: key.public, priority: 30 }], domains: {}, connectTimeout: 5 };
      const sub = realiseWithModule(dir, top, cache);
      if (sub.status !== 0) throw new Error(`substitution: ${sub.stderr}`);
      ours.push(sub.seconds);
      const dead = `http://127.0.0.1:${await freePort()}`;
      const withDown = realiseWithModule(dir, top, { ...cache, substituters: [{ url: dead, publicKey: key.public, priority: 20 }, ...cache.substituters] });
      if (withDown.status !== 0) throw new Error(`substitution past a dead cache: ${withDown.stderr}`);
      down.push(withDown.seconds);
      for (const root of [dst, sub.root, withDown.root]) fs.rmSync(root, { recursive: true, force: true });
    }
    const ratio = median(ours) / median(floor);
    const extra = median(down) - median(ours);
    const subOk = ratio <= SUBSTITUTE_MAX_RATIO;
    const downOk = extra <= DOWN_MAX_EXTRA_SECONDS;
    const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");
    const mib = (paths * kib) / 1024;
    const lines = [
      "",
      `Fleet cache (Nix 2.8 on loopback, a closure of ${paths} paths, ${fmt(mib, 1)} MiB; median of ${runs})`,
      table([
        ["row", "ours (s)", "floor (s)", "ratio / extra", "target", "result"],
        ["substitute from the fleet cache (HTTP, signed)", fmt(median(ours)), fmt(median(floor)), `${fmt(ratio)}x`, `<= ${SUBSTITUTE_MAX_RATIO}x store copy`, verdict(subOk)],
        ["... with a dead cache asked first", fmt(median(down)), fmt(median(ours)), `+${fmt(extra)} s`, `<= +${DOWN_MAX_EXTRA_SECONDS} s`, verdict(downOk)],
      ]),
    ];
    return { lines, failures: Number(!subOk) + Number(!downOk) };
  } finally {
    server.proc.kill();
  }
}
