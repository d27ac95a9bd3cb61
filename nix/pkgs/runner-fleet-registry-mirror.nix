# The registry mirror's config renderer (stdlib-only Python, tested in test/registry-mirror.test.ts);
# run by nix/modules/registry-mirror.nix on fireactions hosts.
{ writers }:
writers.writePython3Bin "runner-fleet-registry-mirror" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./runner-fleet-registry-mirror.py)
