/* collector/collector_int.h - declarations shared by the files of collector/ only. */
#ifndef IOCD_COLLECTOR_INT_H
#define IOCD_COLLECTOR_INT_H

#include "collector/collector.h"
#include "collector/parse_int.h"

/* The newlines in p[0..len) (collector/loop.c). */
uint64_t col_count_lines(const char *p, size_t len);

#endif
