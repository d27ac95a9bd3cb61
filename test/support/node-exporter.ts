/**
 * Debian's prometheus-node-exporter started the way nixpkgs' module starts node_exporter
 * (nixos/modules/services/monitoring/prometheus/exporters/node.nix, docs/upstream.md "Monitoring
 * (#21)"): `--collector.<x>` per enabledCollectors, `--no-collector.<x>` per disabledCollectors,
 * then `--web.listen-address <listenAddress>:<port>` and extraFlags. nix/modules/monitoring.nix
 * sets none of the lists, so only the listen address is passed.
 */
import { spawn, type ChildProcess } from "node:child_process";

export const NODE_EXPORTER = "/usr/bin/prometheus-node-exporter";

/** The argv the NixOS module's ExecStart gives node_exporter, for our settings. */
export function nodeExporterArgs(listenAddress: string, port: number): string[] {
  return ["--web.listen-address", `${listenAddress}:${port}`];
}

export function startNodeExporter(listenAddress: string, port: number, prefix: string[] = []): ChildProcess {
  const [cmd, ...rest] = [...prefix, NODE_EXPORTER, ...nodeExporterArgs(listenAddress, port)];
  return spawn(cmd, rest, { stdio: "ignore" });
}
