/* collector/json_int.h - a strict (RFC 8259) JSON pull reader over one buffer, for the JSON
 * lines import and later the API's request bodies. Internal to collector/ for now.
 * The reader never allocates and never recurses on input depth: nesting is a bit stack
 * capped at COL_JSON_DEPTH_MAX. Tokens point into the caller's buffer, which must outlive
 * the reader; strings are validated (escapes, UTF-8, surrogate pairs) as they are read, so
 * unescaping a string token afterwards cannot fail for any reason but the output's size.
 * Threads: a reader is used by one thread at a time; the functions keep no global state. */
#ifndef IOCD_COLLECTOR_JSON_INT_H
#define IOCD_COLLECTOR_JSON_INT_H

#include "common/common.h"

#define COL_JSON_DEPTH_MAX 64 /* nested arrays/objects; one bit each in col_json.stack */

typedef enum col_json_tok {
    COL_JSON_ERROR,     /* malformed input: see err and err_off; every later call repeats it */
    COL_JSON_END,       /* the one top-level value and trailing whitespace are consumed */
    COL_JSON_OBJ_BEGIN, /* { */
    COL_JSON_OBJ_END,   /* } */
    COL_JSON_ARR_BEGIN, /* [ */
    COL_JSON_ARR_END,   /* ] */
    COL_JSON_KEY,       /* an object member's name (a string); its ':' is consumed later */
    COL_JSON_STRING,    /* a string value */
    COL_JSON_NUMBER,
    COL_JSON_TRUE,
    COL_JSON_FALSE,
    COL_JSON_NULL,
} col_json_tok;

/* The reader's state. Fields below "current token" and "error" may be read by the caller;
 * the rest is private. */
typedef struct col_json {
    const char *buf;
    size_t len;
    size_t pos;     /* next byte to read */
    uint64_t stack; /* bit d set: level d+1 is an object, clear: an array */
    unsigned depth; /* open containers */
    int state;      /* what the grammar allows next (json.c's enum) */
    /* Current token. For strings and keys, ptr/len span the raw text between the quotes
     * (escapes still in; escaped says whether there are any); for numbers, the number's
     * text. off is the byte offset of the token's first byte (the opening quote). */
    col_json_tok tok;
    const char *ptr;
    size_t tok_len;
    size_t off;
    bool escaped;  /* string token contains backslash escapes: use col_json_str */
    bool num_frac; /* number token has a fraction or an exponent */
    /* Error: a static message and the byte offset where it was found. */
    const char *err;
    size_t err_off;
} col_json;

/* Starts reading the single JSON document in buf[0, len). buf need not be NUL-terminated. */
void col_json_init(col_json *j, const char *buf, size_t len);

/* Reads the next token and returns it (also kept in j->tok). Checks the grammar as it goes
 * (commas, colons, nesting, trailing commas, leading zeros, control characters, escapes,
 * UTF-8, lone surrogates, the depth cap); a violation returns COL_JSON_ERROR with j->err set,
 * and the reader stays in that state. */
col_json_tok col_json_next(col_json *j);

/* Marks the current token as wrong for the caller's own reason (msg: static text): sets
 * err/err_off to the token and puts the reader in the error state. Returns COL_JSON_ERROR. */
col_json_tok col_json_fail(col_json *j, const char *msg);

/* Skips the value whose first token was just returned: for OBJ_BEGIN/ARR_BEGIN, reads up to
 * and including the matching end token; for a scalar, does nothing. Iterative.
 * Errors: IOCD_EPARSE (j->err set) if the input is malformed or the current token does not
 * begin a value. */
iocd_err col_json_skip(col_json *j);

/* Unescapes the current STRING or KEY token into out (not NUL-terminated); *len_out gets
 * its length. The result is valid UTF-8 and never longer than j->tok_len, so cap >= tok_len
 * always suffices. Errors: IOCD_ETOOBIG if cap is too small, IOCD_EINVAL if the current
 * token is not a string. out and *len_out are written only on success. */
iocd_err col_json_str(const col_json *j, char *out, size_t cap, size_t *len_out);

/* Whether the current STRING or KEY token, unescaped, equals s[0, len). No allocation. */
bool col_json_str_eq(const col_json *j, const char *s, size_t len);

/* The current NUMBER token as the nearest double (correctly rounded; "-0" gives -0.0).
 * Errors: IOCD_ELIMIT if its magnitude is too large for a double (1e400) or its text is
 * longer than 400 bytes, IOCD_EINVAL if the current token is not a number. */
iocd_err col_json_double(const col_json *j, double *out);

/* The current NUMBER token as an int64 when it is written as an integer (no fraction, no
 * exponent). Errors: IOCD_EPARSE if it has a fraction or exponent, IOCD_ELIMIT if it is
 * outside int64, IOCD_EINVAL if the current token is not a number. */
iocd_err col_json_int64(const col_json *j, int64_t *out);

/* Whether s[0, len) is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
bool col_utf8_valid(const char *s, size_t len);

#endif
