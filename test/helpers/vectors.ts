/**
 * Test vectors from the protocol reference (§1.2 narinfo, §4.4 signatures), produced by Nix 2.8
 * with a throw-away key. Shared by the format tests.
 */
export const PUBLIC_KEY = 'test-cache-1:9vWTHAyto6fyke3tnep6YUL8gs8S7lGGXBhBqGZh5Vs='
export const SIG1 = 'test-cache-1:NF6bBuilfUdrFXCVapjgycU/lzj+kyUZgDXeX9M2zq8w0ill6e5slEHYi11QDDRd8AZy1lAKpSeIvYlXkPYjBg=='

/** The narinfo of `ref.txt` as `nix copy --to file://…?compression=none` wrote it. */
export const EXAMPLE_NARINFO = `StorePath: /nix/store/ar1a8iyh9msjjy5v4k9gbhyha8j2c5y0-ref.txt
URL: nar/1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq.nar
Compression: none
FileHash: sha256:1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq
FileSize: 224
NarHash: sha256:1bsmx0a644caqb6530x9c6fa1l6vrr5m32s26a3pivl9vd1yqhkq
NarSize: 224
References: i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt vcx8yx1zp6jvx5mdjccdq56ihnxrzg24-dir
Sig: ${SIG1}
CA: text:sha256:12fadgv2fid55mpz90bqbcq9iic0l9r3ki1sq2ibf8a82pbsixcw
`
