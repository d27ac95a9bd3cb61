# Writes the seed files (stdlib-only Python, tested in test/nix.test.ts);
# runner-fleet-seed in modules/bootstrap.nix wraps it and then bootstraps.
{ writers }:
writers.writePython3Bin "runner-fleet-seed-files" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./runner-fleet-seed.py)
