/* tests/fuzz/fuzz_devices.c - the device registry's upload parsers (CSV and JSON): each input
 * goes through both. Every row handed on must have passed the checks (an id, valid UTF-8
 * without control characters, a position in range or none); rows and rejections come in line
 * order; a refused body says why. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alerts/alerts_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_state {
    uint64_t last_line, rows, rejects;
} fuzz_state;

static iocd_err fuzz_row(void *ud, const device_row *r)
{
    fuzz_state *s = ud;
    int i;

    if (r->line == 0 || r->line < s->last_line || r->f[DEV_ID][0] == '\0')
        abort();
    for (i = 0; i < DEV_NFIELDS; i++) {
        const char *p;
        if (!iocd_utf8_valid(r->f[i], strlen(r->f[i])))
            abort();
        for (p = r->f[i]; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                abort();
    }
    if (r->has_position &&
        (!isfinite(r->latitude) || fabs(r->latitude) > 90 || fabs(r->longitude) > 180))
        abort();
    if (!r->has_position && (r->f[DEV_LATITUDE][0] != '\0' || r->f[DEV_LONGITUDE][0] != '\0'))
        abort();
    s->last_line = r->line;
    s->rows++;
    return IOCD_OK;
}

static void fuzz_reject(void *ud, uint64_t line, const char *reason)
{
    fuzz_state *s = ud;

    if (line == 0 || line < s->last_line || reason == NULL || reason[0] == '\0')
        abort();
    s->last_line = line;
    s->rejects++;
}

static void run(bool json, const uint8_t *data, size_t size)
{
    fuzz_state s = { 0, 0, 0 };
    device_sink sink = { fuzz_row, fuzz_reject, &s };
    char errbuf[256] = "";
    iocd_err err = json
                       ? devices_parse_json((const char *)data, size, &sink, errbuf, sizeof(errbuf))
                       : devices_parse_csv((const char *)data, size, &sink, errbuf, sizeof(errbuf));

    if (err != IOCD_OK && (err != IOCD_EPARSE || errbuf[0] == '\0'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(false, data, size);
    run(true, data, size);
    return 0;
}
