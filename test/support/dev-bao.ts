import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "./free-port";

/**
 * A real `bao server -dev` (in memory, unsealed, the given root token) on a free loopback port,
 * once `GET /v1/sys/health` answers 200 (up to 10 s), or on `port` when a test restarts it there.
 */
export async function startDevBao(bin: string, opts: { rootToken: string; port?: number; env?: NodeJS.ProcessEnv }): Promise<{ proc: ChildProcess; address: string; port: number }> {
  const port = opts.port ?? (await freePort());
  const address = `http://127.0.0.1:${port}`;
  const proc = spawn(bin, ["server", "-dev", `-dev-root-token-id=${opts.rootToken}`, `-dev-listen-address=127.0.0.1:${port}`], {
    stdio: "ignore", ...(opts.env ? { env: opts.env } : {}),
  });
  for (let i = 0; i < 100 && (await fetch(`${address}/v1/sys/health`).then((r) => r.ok, () => false)) === false; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, address, port };
}
