// zlib, used to read the gzip-compressed IDX files that MNIST is published as.
#include <zlib.h>
