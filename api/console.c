/* api/console.c - the web console at / : one self-contained page (api/console.html, built into
 * the binary, no internet needed) that reads the incident and query APIs: domains and wards at
 * a glance, the live incident list with filters, an incident's detail with the chart of the
 * series that triggered it, and the operator actions. It polls every 2 s after the first
 * render, so the first paint never waits on a stream. */
#include "api/api_int.h"

#include <string.h>

/* The page's bytes, placed in the binary by the assembler (a NUL follows them). */
__asm__(".section .rodata\n"
        ".global iocd_console_html\n"
        "iocd_console_html:\n"
        ".incbin \"api/console.html\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char iocd_console_html[];

static api_status h_console(api_req *req, void *ud)
{
    (void)ud;
    if (strcmp(req->path, "/") != 0 && strcmp(req->path, "/console") != 0 &&
        strcmp(req->path, "/index.html") != 0) {
        api_error(req, 404, "not_found", "no such page: %s", req->path);
        return API_DONE;
    }
    api_reply_text(req, 200, "text/html; charset=utf-8", iocd_console_html);
    return API_DONE;
}

iocd_err api_console_register(api_server *srv)
{
    iocd_err err = api_route_add(srv, API_GET, "/", COL_ROLE_NONE, h_console, NULL);

    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/console", COL_ROLE_NONE, h_console, NULL);
    if (err == IOCD_OK)
        err = api_route_add(srv, API_GET, "/index.html", COL_ROLE_NONE, h_console, NULL);
    return err;
}
