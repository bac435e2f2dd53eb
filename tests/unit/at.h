/* Asserting helpers that report the caller's line. cmocka's assert_*() macros record
 * __FILE__/__LINE__ where they are written, so a check inside a helper called from twenty tests
 * would always point at the helper. A helper is therefore written as
 *
 *     static void expect_x_at(AT_PARAMS, const char *in, int want)
 *     {
 *         at_assert_int_equal(parse(in), want);  // reported at the caller's file:line
 *     }
 *     #define expect_x(...) expect_x_at(AT_HERE, __VA_ARGS__)
 *
 * and called as expect_x(...). A helper calling another passes its own caller on:
 * expect_y_at(AT_PASS, ...). Include after <cmocka.h>. */
#ifndef VP_TESTS_AT_H
#define VP_TESTS_AT_H

/* clang-format off */
#define AT_PARAMS const char *at_file, int at_line
#define AT_HERE __FILE__, __LINE__
#define AT_PASS at_file, at_line

#define at_assert_true(c) \
    _assert_true(cast_to_largest_integral_type(c), #c, at_file, at_line)
#define at_assert_false(c) \
    _assert_true(!(cast_to_largest_integral_type(c)), #c, at_file, at_line)
#define at_assert_non_null(c) \
    _assert_true(cast_ptr_to_largest_integral_type(c), #c, at_file, at_line)
#define at_assert_null(c) \
    _assert_true(!(cast_ptr_to_largest_integral_type(c)), #c, at_file, at_line)
#define at_assert_return_code(rc, error) \
    _assert_return_code(cast_to_largest_integral_type(rc), sizeof(rc), \
                        cast_to_largest_integral_type(error), #rc, at_file, at_line)
#define at_assert_ptr_equal(a, b) \
    _assert_int_equal(cast_ptr_to_largest_integral_type(a), \
                      cast_ptr_to_largest_integral_type(b), at_file, at_line)
#define at_assert_ptr_not_equal(a, b) \
    _assert_int_not_equal(cast_ptr_to_largest_integral_type(a), \
                          cast_ptr_to_largest_integral_type(b), at_file, at_line)
#define at_assert_int_equal(a, b) \
    _assert_int_equal(cast_to_largest_integral_type(a), cast_to_largest_integral_type(b), \
                      at_file, at_line)
#define at_assert_int_not_equal(a, b) \
    _assert_int_not_equal(cast_to_largest_integral_type(a), cast_to_largest_integral_type(b), \
                          at_file, at_line)
#define at_assert_string_equal(a, b) \
    _assert_string_equal((const char *)(a), (const char *)(b), at_file, at_line)
#define at_assert_string_not_equal(a, b) \
    _assert_string_not_equal((const char *)(a), (const char *)(b), at_file, at_line)
#define at_assert_memory_equal(a, b, size) \
    _assert_memory_equal((const void *)(a), (const void *)(b), size, at_file, at_line)
#define at_assert_memory_not_equal(a, b, size) \
    _assert_memory_not_equal((const void *)(a), (const void *)(b), size, at_file, at_line)
#define at_assert_in_range(value, minimum, maximum) \
    _assert_in_range(cast_to_largest_integral_type(value), cast_to_largest_integral_type(minimum), \
                     cast_to_largest_integral_type(maximum), at_file, at_line)
#define at_assert_not_in_range(value, minimum, maximum) \
    _assert_not_in_range(cast_to_largest_integral_type(value), \
                         cast_to_largest_integral_type(minimum), \
                         cast_to_largest_integral_type(maximum), at_file, at_line)
#define at_fail() _fail(at_file, at_line)
#define at_fail_msg(msg, ...) \
    do { \
        print_error("ERROR: " msg "\n", ##__VA_ARGS__); \
        at_fail(); \
    } while (0)
/* clang-format on */

#include <time.h>

/* Milliseconds from a to b (CLOCK_MONOTONIC readings). */
static inline double at_ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

#endif
