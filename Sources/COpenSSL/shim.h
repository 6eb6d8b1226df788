// OpenSSL's libcrypto (Debian: libssl-dev), used only for sealing frames with AES-256-GCM in
// place of swift-crypto's copying API (see Sources/Wire/Security/FrameCipher.swift).
#include <openssl/evp.h>
#include <openssl/err.h>
