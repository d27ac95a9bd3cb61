# The ExecStart wrapper for fireactions v0.4.0, which exits 0 on errors (see the script).
# Plain bash, no errexit: `wait` returning non-zero is how the script learns the status.
# Tested with a stand-in daemon in test/fireactions.test.ts.
{ writeShellScriptBin }:
writeShellScriptBin "fireactions-supervise" (builtins.readFile ./fireactions-supervise.sh)
