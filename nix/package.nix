# narswarm as a Nix package: the npm package built from this checkout with buildNpmPackage and run
# by Node.js 24 (narswarm needs Node 24: node:sqlite, zstd in node:zlib).
#
# npmDepsHash pins the npm dependencies of package-lock.json. It is a placeholder here, since it
# changes with every change of the lock file: after one, run
#   nix run nixpkgs#prefetch-npm-deps -- package-lock.json
# (or build once and copy the hash Nix prints) and put the result below.
{ lib, buildNpmPackage, nodejs_24, python3 }:

buildNpmPackage {
  pname = "narswarm";
  version = (lib.importJSON ../package.json).version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../bin
      ../vendor
      ../src
      ../docs
      ../narswarm.example.toml
      ../README.md
    ];
  };

  nodejs = nodejs_24;
  npmDepsHash = lib.fakeHash;

  # `npm run build` (tsc) writes dist/, which bin/narswarm.js runs.
  npmBuildScript = "build";
  # lzma-native ships prebuilt binaries; node-gyp builds it where none fits.
  nativeBuildInputs = [ python3 ];

  meta = {
    description = "A peer-to-peer binary cache for Nix and Lix";
    license = lib.licenses.mit;
    mainProgram = "narswarm";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
