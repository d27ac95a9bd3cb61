# The host-side renderer (stdlib-only Python, tested in test/nix.test.ts).
{ writers }:
writers.writePython3Bin "render-fireactions-config" {
  # The writer runs `flake8 --ignore E501` on "#! <python>" + this file (so
  # the file has no shebang of its own); --ignore replaces flake8's default
  # list, so W503, W504 and E226 apply. Long lines are kept where splitting
  # them would hurt readability. test/python-writers.test.ts runs that check.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./render-fireactions-config.py)
