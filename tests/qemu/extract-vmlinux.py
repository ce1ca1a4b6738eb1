#!/usr/bin/env python3
"""Cut the uncompressed ELF kernel out of a bzImage whose payload is xz.

qemu boots an ELF vmlinux through its PVH entry point, skipping the
seconds that decompressing a bzImage costs under software emulation.
Usage: extract-vmlinux.py BZIMAGE OUT
"""
import lzma
import sys

def main() -> int:
    src, out = sys.argv[1], sys.argv[2]
    data = open(src, "rb").read()
    magic = b"\xfd7zXZ\x00"
    start = data.find(magic)
    while start != -1:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            kernel = d.decompress(data[start:])
        except lzma.LZMAError:
            kernel = b""
        if kernel[:4] == b"\x7fELF":
            with open(out, "wb") as f:
                f.write(kernel)
            return 0
        start = data.find(magic, start + 1)
    print(f"extract-vmlinux: no xz-compressed ELF kernel in {src}", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
