/* The libFuzzer entry point every target in tests/fuzz/ defines (its prototype, for
 * -Wmissing-prototypes). */
#ifndef VP_TESTS_FUZZ_H
#define VP_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
