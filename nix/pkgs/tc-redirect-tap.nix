# tc-redirect-tap, the CNI plugin that hands a CNI veth to Firecracker's tap device.
# nixpkgs has no package for it; this follows the one nixos-fireactions ships
# (pkgs/tc-redirect-tap.nix there): same source revision and hashes, both
# re-checked against the source (docs/upstream.md).
{
  lib,
  buildGoModule,
  fetchFromGitHub,
}:

buildGoModule {
  pname = "tc-redirect-tap";
  version = "0-unstable-2025-05-16";

  src = fetchFromGitHub {
    owner = "awslabs";
    repo = "tc-redirect-tap";
    rev = "34bf829e9a5c99df47318c7feeb637576df239fc";
    hash = "sha256-yeokm0aTwlMXmnMcNVRER9cZVuuNqk/RW0HY9vjiPPA=";
  };

  vendorHash = "sha256-gKkWzy+PVlLSOSljFG/T5RmROmfaK/nfXDId4kTeZKM=";

  subPackages = [ "cmd/tc-redirect-tap" ];
  # Upstream tests create network namespaces and need root.
  doCheck = false;

  meta = {
    description = "CNI plugin that redirects a CNI interface to a TAP device for Firecracker";
    homepage = "https://github.com/awslabs/tc-redirect-tap";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "tc-redirect-tap";
  };
}
