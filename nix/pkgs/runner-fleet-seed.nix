# Writes the seed files (stdlib-only Python, tested in test/nix.test.ts);
# runner-fleet-seed in modules/bootstrap.nix wraps it and then bootstraps.
{ writers }:
writers.writePython3Bin "runner-fleet-seed-files" {
  # The writer runs `flake8 --ignore E501` on "#! <python>" + this file (so
  # the file has no shebang of its own); --ignore replaces flake8's default
  # list, so W503, W504 and E226 apply. Long lines are kept where splitting
  # them would hurt readability. test/python-writers.test.ts runs that check.
  flakeIgnore = [ "E501" ];
} (builtins.readFile ./runner-fleet-seed.py)
