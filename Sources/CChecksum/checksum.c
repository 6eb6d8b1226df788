// CRC-32C (Castagnoli): the checksum of the wire protocol's split float payloads.
//
// On x86-64 with SSE 4.2 and on AArch64 with the CRC extension (both found at run time) the
// processor's CRC-32C instruction does the work, 8 bytes at a time (7.7-8.0 GB/s on one core of
// the project's machine, against 2.2-3.4 GB/s for zlib's CRC-32). Elsewhere tables do, 8 bytes
// at a time ("slicing by 8": 1.6 GB/s there), with the same result on every input.
#include "checksum.h"

#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

// tables[0][k] is the CRC-32C register after shifting in byte k (reflected polynomial
// 0x82F63B78); tables[i][k] after byte k followed by i zero bytes. Built once, on first use.
static uint32_t tables[8][256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (uint32_t k = 0; k < 256; k++) {
        uint32_t c = k;
        for (int bit = 0; bit < 8; bit++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        tables[0][k] = c;
    }
    for (uint32_t k = 0; k < 256; k++) {
        for (int i = 1; i < 8; i++) tables[i][k] = (tables[i - 1][k] >> 8) ^ tables[0][tables[i - 1][k] & 0xff];
    }
}

uint32_t cks_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    pthread_once(&tables_once, build_tables);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        // Little-endian assembly of the next 8 bytes, whatever the machine's byte order.
        uint32_t lo = c ^ ((uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24);
        uint32_t hi = (uint32_t)p[i + 4] | (uint32_t)p[i + 5] << 8 | (uint32_t)p[i + 6] << 16 | (uint32_t)p[i + 7] << 24;
        c = tables[7][lo & 0xff] ^ tables[6][(lo >> 8) & 0xff] ^ tables[5][(lo >> 16) & 0xff] ^ tables[4][lo >> 24] ^
            tables[3][hi & 0xff] ^ tables[2][(hi >> 8) & 0xff] ^ tables[1][(hi >> 16) & 0xff] ^ tables[0][hi >> 24];
    }
    for (; i < length; i++) c = tables[0][(c ^ p[i]) & 0xff] ^ (c >> 8);
    return ~c;
}

// The processor's instruction, 8 bytes a step then byte by byte: the same loop on both
// architectures, with their target attribute and intrinsics.
#if defined(__x86_64__)
#define HARDWARE_CRC 1
#define HARDWARE_TARGET __attribute__((target("sse4.2")))
#define CRC_8_BYTES(c, word) ((uint32_t)_mm_crc32_u64((c), (word)))
#define CRC_BYTE(c, byte) _mm_crc32_u8((c), (byte))
#elif defined(__aarch64__) && defined(__linux__)
#define HARDWARE_CRC 1
#define HARDWARE_TARGET __attribute__((target("crc")))
#define CRC_8_BYTES(c, word) __builtin_arm_crc32cd((c), (word))
#define CRC_BYTE(c, byte) __builtin_arm_crc32cb((c), (byte))
#endif

#ifdef HARDWARE_CRC
HARDWARE_TARGET static uint32_t crc32c_hardware(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = data;
    uint32_t c = ~crc;
    size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        c = CRC_8_BYTES(c, word);
    }
    for (; i < length; i++) c = CRC_BYTE(c, p[i]);
    return ~c;
}
#endif

int cks_crc32c_is_hardware(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("sse4.2") != 0;
#elif defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#else
    return 0;
#endif
}

uint32_t cks_crc32c(uint32_t crc, const void *data, size_t length) {
#ifdef HARDWARE_CRC
    if (cks_crc32c_is_hardware()) return crc32c_hardware(crc, data, length);
#endif
    return cks_crc32c_portable(crc, data, length);
}
