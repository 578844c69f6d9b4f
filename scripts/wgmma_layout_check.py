#!/usr/bin/env python3
"""CPU check of matmul_v5's shared-memory layout (cu/matmul_wgmma.cu) against the wgmma
descriptor model of the PTX ISA (canonical layouts, 128-byte swizzle = byte-address bits
[4:6] ^= bits [7:9], taken on the absolute shared address). For every element that each
wgmma m64n256k16 of a k-tile reads, the address the descriptor designates must be where the
kernel's cp.async stored that element. No GPU; run: python3 scripts/wgmma_layout_check.py"""

BM, BN, BK = 128, 256, 64
A_STAGE, B_STAGE = BM * BK * 2, BK * BN * 2


def swz(addr):
    return addr ^ (((addr >> 7) & 7) << 4)


def desc_fields(start, lbo, sbo):
    d = ((start & 0x3FFFF) >> 4) | ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (1 << 62)
    return ((d & 0x3FFF) << 4, ((d >> 16) & 0x3FFF) << 4, ((d >> 32) & 0x3FFF) << 4, d >> 62)


def a_read(start, lbo, sbo, m, k):
    """K-major SW128, bf16 (T = 8): ((8,m),(T,2k)):((8T,SBO),(1,T)) in elements; SBO in bytes."""
    return swz(start + (m % 8) * 128 + (m // 8) * sbo + k * 2)


def b_read(start, lbo, sbo, k, n):
    """MN-major SW128, bf16: ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)); LBO, SBO in bytes."""
    n0, n1, n2 = n % 8, (n // 8) % 8, n // 64
    k0, k1 = k % 8, k // 8
    return swz(start + n0 * 2 + n1 * 16 + n2 * lbo + k0 * 128 + k1 * sbo)


def a_store(sa, r, col):  # kernel: sa + r*128 + ((c ^ (r&7)) << 4), element col%8 inside the chunk
    c = col // 8
    return sa + r * 128 + ((c ^ (r & 7)) << 4) + (col % 8) * 2


def b_store(sb, r, ncol):  # kernel: sb + j*8192 + r*128 + ((c ^ (r&7)) << 4)
    cn = ncol // 8
    j, c = cn >> 3, cn & 7
    return sb + j * 8192 + r * 128 + ((c ^ (r & 7)) << 4) + (ncol % 8) * 2


def main():
    for base in (0, 1024 * 7):  # any 1024-aligned base
        for stage in range(4):
            sA = base + stage * A_STAGE
            sB = base + 4 * A_STAGE + stage * B_STAGE
            assert sA % 1024 == 0 and sB % 1024 == 0
            # stores are a bijection onto the stage
            assert len({a_store(sA, r, c) for r in range(BM) for c in range(0, BK)}) == BM * BK
            assert len({b_store(sB, r, c) for r in range(BK) for c in range(BN)}) == BK * BN
            for wg in range(2):
                for kk in range(BK // 16):
                    start, lbo, sbo, mode = desc_fields(sA + wg * 64 * 128 + kk * 32, 16, 1024)
                    assert mode == 1
                    for m in range(64):
                        for k in range(16):
                            got = a_read(start, lbo, sbo, m, k)
                            want = a_store(sA, wg * 64 + m, kk * 16 + k)
                            assert got == want, ("A", stage, wg, kk, m, k, got, want)
                    start, lbo, sbo, mode = desc_fields(sB + kk * 2048, 8192, 1024)
                    for k in range(16):
                        for n in range(BN):
                            got = b_read(start, lbo, sbo, k, n)
                            want = b_store(sB, kk * 16 + k, n)
                            assert got == want, ("B", stage, kk, k, n, got, want)
    print("wgmma layout check: every descriptor-addressed element matches the cp.async store")


if __name__ == "__main__":
    main()
