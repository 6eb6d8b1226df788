#ifndef CCHECKSUM_H
#define CCHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start): the processor's
/// CRC-32C instruction where there is one, else tables. cks_crc32c(0, "123456789", 9) is
/// 0xE3069283.
uint32_t cks_crc32c(uint32_t crc, const void *data, size_t length);

/// The same with tables only, whatever the processor (for tests and other machines).
uint32_t cks_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// 1 when cks_crc32c uses the processor's instruction, else 0.
int cks_crc32c_is_hardware(void);

#endif
