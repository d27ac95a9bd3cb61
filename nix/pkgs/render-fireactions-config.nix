# The host-side renderer (stdlib-only Python, tested in test/nix.test.ts).
{ writers }:
writers.writePython3Bin "render-fireactions-config" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./render-fireactions-config.py)
