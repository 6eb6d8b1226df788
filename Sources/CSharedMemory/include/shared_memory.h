#ifndef BACKPROP_SHARED_MEMORY_H
#define BACKPROP_SHARED_MEMORY_H

#include <stdint.h>

/* Acquire loads and release stores of the slot states of a shared payload region (Wire's
   SharedPayloadRegion), a word in memory that another process maps too. */

static inline uint32_t bp_shared_load_acquire(const uint32_t *word) {
    return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

static inline void bp_shared_store_release(uint32_t *word, uint32_t value) {
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
}

/* Sets *word from `expected` to `desired` if it holds `expected`; returns whether it did. */
static inline int bp_shared_compare_exchange(uint32_t *word, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

#endif
