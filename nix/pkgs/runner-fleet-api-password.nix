# The per-boot fireactions API password (see the script); run by nix/modules/fireactions-api-auth.nix,
# tested in test/drain-nix.test.ts.
{ writeShellApplication, coreutils }:
writeShellApplication {
  name = "runner-fleet-api-password";
  runtimeInputs = [ coreutils ];
  text = builtins.readFile ./runner-fleet-api-password.sh;
}
