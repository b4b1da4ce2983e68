{
  description = "narswarm: a peer-to-peer binary cache for Nix and Lix";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: rec {
        narswarm = pkgs.callPackage ./nix/package.nix { };
        default = narswarm;
      });

      overlays.default = final: prev: {
        narswarm = final.callPackage ./nix/package.nix { };
      };

      # Brings the overlay along, so that services.narswarm.package defaults to this flake's build.
      nixosModules.default = { ... }: {
        imports = [ ./nix/module.nix ];
        nixpkgs.overlays = [ self.overlays.default ];
      };
    };
}
