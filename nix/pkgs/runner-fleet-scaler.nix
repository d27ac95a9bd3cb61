# The on-demand scaler (stdlib-only Python, tested in test/scaler.test.ts); run by
# nix/modules/scaler.nix on fireactions hosts.
{ writers }:
writers.writePython3Bin "runner-fleet-scaler" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./runner-fleet-scaler.py)
