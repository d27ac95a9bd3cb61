# fireactions v0.4.0 (the config format our renderer emits). Not in nixpkgs,
# so we build it from the tagged source; bump version and both hashes together.
{
  lib,
  buildGoModule,
  fetchFromGitHub,
}:

buildGoModule rec {
  pname = "fireactions";
  version = "0.4.0";

  src = fetchFromGitHub {
    owner = "hostinger";
    repo = "fireactions";
    rev = "v${version}";
    hash = "sha256-R4/rbzVOf29hzFygzJemjdVezvGkfmQaF2Vgjppnu+8=";
  };

  vendorHash = "sha256-DCPj2JJr1UY5DYa472NnT1x7ZqZyuu0jOUpM4dxwL+8=";

  subPackages = [ "cmd/fireactions" ];
  ldflags = [ "-s" "-w" "-X github.com/hostinger/fireactions.Version=v${version}" ];
  # Upstream tests need KVM and network.
  doCheck = false;

  meta = {
    description = "GitHub Actions runners in Firecracker microVMs";
    homepage = "https://github.com/hostinger/fireactions";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "fireactions";
  };
}
