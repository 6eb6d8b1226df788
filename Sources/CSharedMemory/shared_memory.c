// The functions are inline in the header; this file makes the target a C library for SwiftPM.
#include "shared_memory.h"
