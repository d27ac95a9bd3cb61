# Drains fireactions before a step that would stop its runners, and reloads it for pool edits
# (stdlib-only Python; tested in test/drain.test.ts against the fireactions and GitHub stand-ins).
{ writers, openssl }:
writers.writePython3Bin "runner-fleet-drain" {
  # Long lines are kept where splitting them would hurt readability.
  flakeIgnore = [ "E501" ];
} (builtins.replaceStrings [ ''OPENSSL = "openssl"'' ] [ ''OPENSSL = "${openssl}/bin/openssl"'' ]
  (builtins.readFile ./runner-fleet-drain.py))
