// libzstd (Debian: libzstd-dev), used for gradient, parameter and data-set payloads.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>
