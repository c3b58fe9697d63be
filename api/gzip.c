/* api/gzip.c - inflating request bodies sent with Content-Encoding: gzip (or deflate).
 * libmicrohttpd hands us the raw compressed bytes; the inflated size is capped by the same
 * body limit as uncompressed bodies, so a small "gzip bomb" cannot exhaust memory. */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

#include <zlib.h>

iocd_err api_inflate(const void *in, size_t len, bool gzip, size_t max_out, iocd_buf *out,
                     char *errbuf, size_t errlen)
{
    z_stream zs;
    unsigned char chunk[64 * 1024];
    iocd_err err = IOCD_OK;
    int rc;

    memset(&zs, 0, sizeof(zs));
    /* 16 + MAX_WBITS: gzip wrapper; 32 + MAX_WBITS would auto-detect, but we honour the
     * header the client sent. */
    rc = inflateInit2(&zs, gzip ? 16 + MAX_WBITS : MAX_WBITS);
    if (rc != Z_OK) {
        snprintf(errbuf, errlen, "gzip: cannot initialise the decoder");
        return IOCD_ENOMEM;
    }
    zs.next_in = (unsigned char *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    do {
        zs.next_out = chunk;
        zs.avail_out = sizeof(chunk);
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            snprintf(errbuf, errlen, "%s: corrupt body (%s)", gzip ? "gzip" : "deflate",
                     zs.msg != NULL ? zs.msg : "bad data");
            err = IOCD_EPARSE;
            break;
        }
        if (out->len + (sizeof(chunk) - zs.avail_out) > max_out) {
            snprintf(errbuf, errlen, "body is larger than %zu bytes once decompressed", max_out);
            err = IOCD_ETOOBIG;
            break;
        }
        err = iocd_buf_append(out, chunk, sizeof(chunk) - zs.avail_out);
        if (err != IOCD_OK)
            break;
        if (rc != Z_STREAM_END && zs.avail_in == 0 && zs.avail_out != 0) {
            snprintf(errbuf, errlen, "%s: truncated body", gzip ? "gzip" : "deflate");
            err = IOCD_EPARSE;
            break;
        }
    } while (rc != Z_STREAM_END);
    inflateEnd(&zs);
    return err;
}
