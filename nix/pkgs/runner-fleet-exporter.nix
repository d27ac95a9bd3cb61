# runner-fleet's own exporter (stdlib-only Python, tested in test/exporter.test.ts); run by
# nix/modules/monitoring.nix on every host.
{ writers }:
writers.writePython3Bin "runner-fleet-exporter" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./runner-fleet-exporter.py)
