/* tests/fuzz/fuzz_selector.c - PromQL series selector parser (and its regex compilation). */
#include <stdlib.h>
#include <string.h>

#include "query/query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    query_selector sel;
    char *text, errbuf[256];
    size_t i;

    if (size > 4096)
        return 0;
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (query_selector_parse(text, &sel, errbuf, sizeof(errbuf)) == IOCD_OK) {
        if (sel.n == 0)
            abort();
        for (i = 0; i < sel.n; i++)
            (void)query_matcher_matches(&sel.m[i], "abc", 3);
        query_selector_fini(&sel);
    } else if (errbuf[0] == '\0') {
        abort(); /* every refusal explains itself */
    }
    free(text);
    return 0;
}
