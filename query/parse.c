/* query/parse.c - the PromQL parser: text to a typed syntax tree (query_expr), with
 * Prometheus 2.42's grammar, operator precedence and type rules, and its error messages
 * ("1:9: parse error: ..."). The tree is immutable once built; evaluation lives in eval.c.
 * Precedence, lowest first: or; and unless; comparisons; + -; * / % atan2; ^ (right
 * associative); unary minus binds looser than ^ and tighter than *. */
#include "query/query_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEPTH_MAX 200 /* nesting cap: hostile input cannot exhaust the stack */

typedef enum tok_kind {
    T_EOF,
    T_NUM,
    T_STR,
    T_IDENT,
    T_LPAREN,
    T_RPAREN,
    T_LBRACE,
    T_LBRACKET,
    T_RBRACKET,
    T_COMMA,
    T_COLON,
    T_AT,
    T_OP, /* a binary operator; tok.op says which */
    T_BAD,
} tok_kind;

typedef struct tok {
    tok_kind kind;
    const char *start;
    size_t len;
    pq_op op;
    double num;
} tok;

typedef struct parser {
    pq_lexer lx;
    int depth;
} parser;

static const char *const type_names[] = { "scalar", "instant vector", "range vector", "string" };

static const char *type_name(query_type t)
{
    return type_names[t];
}

static bool ident_start(char c)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':';
}

static bool ident_char(char c)
{
    return ident_start(c) || isdigit((unsigned char)c);
}

static void skip_ws(parser *ps)
{
    for (;;) {
        while (isspace((unsigned char)*ps->lx.p))
            ps->lx.p++;
        if (*ps->lx.p != '#')
            return;
        while (*ps->lx.p != '\0' && *ps->lx.p != '\n') /* a comment runs to the line's end */
            ps->lx.p++;
    }
}

/* Lexes the token at the current position without consuming it. */
static tok peek(parser *ps)
{
    const char *p;
    tok t = { T_BAD, NULL, 0, PQ_OP_ADD, 0 };

    skip_ws(ps);
    p = ps->lx.p;
    t.start = p;
    t.len = 1;
    switch (*p) {
    case '\0':
        t.kind = T_EOF;
        t.len = 0;
        return t;
    case '(':
        t.kind = T_LPAREN;
        return t;
    case ')':
        t.kind = T_RPAREN;
        return t;
    case '{':
        t.kind = T_LBRACE;
        return t;
    case '[':
        t.kind = T_LBRACKET;
        return t;
    case ']':
        t.kind = T_RBRACKET;
        return t;
    case ',':
        t.kind = T_COMMA;
        return t;
    case ':':
        if (!ident_char(p[1])) {
            t.kind = T_COLON;
            return t;
        }
        break;
    case '@':
        t.kind = T_AT;
        return t;
    case '"':
    case '\'':
    case '`':
        t.kind = T_STR;
        return t;
    case '+':
        t.kind = T_OP;
        t.op = PQ_OP_ADD;
        return t;
    case '-':
        t.kind = T_OP;
        t.op = PQ_OP_SUB;
        return t;
    case '*':
        t.kind = T_OP;
        t.op = PQ_OP_MUL;
        return t;
    case '/':
        t.kind = T_OP;
        t.op = PQ_OP_DIV;
        return t;
    case '%':
        t.kind = T_OP;
        t.op = PQ_OP_MOD;
        return t;
    case '^':
        t.kind = T_OP;
        t.op = PQ_OP_POW;
        return t;
    case '=':
        if (p[1] == '=') {
            t.kind = T_OP;
            t.op = PQ_OP_EQL;
            t.len = 2;
        }
        return t; /* a lone '=' is not an operator outside braces */
    case '!':
        if (p[1] == '=') {
            t.kind = T_OP;
            t.op = PQ_OP_NEQ;
            t.len = 2;
        }
        return t;
    case '<':
        t.kind = T_OP;
        t.op = p[1] == '=' ? PQ_OP_LTE : PQ_OP_LSS;
        t.len = p[1] == '=' ? 2 : 1;
        return t;
    case '>':
        t.kind = T_OP;
        t.op = p[1] == '=' ? PQ_OP_GTE : PQ_OP_GTR;
        t.len = p[1] == '=' ? 2 : 1;
        return t;
    default:
        break;
    }
    if (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) {
        char *end;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
            t.num = (double)strtoull(p, &end, 16);
        else
            t.num = strtod(p, &end);
        t.kind = T_NUM;
        t.len = (size_t)(end - p);
        if (ident_char(*end)) { /* "5m", "1h30m": a duration, lexed where one is expected */
            while (ident_char(p[t.len]))
                t.len++;
            t.kind = T_BAD;
        }
        return t;
    }
    if (ident_start(*p)) {
        size_t n = 0;
        while (ident_char(p[n]))
            n++;
        t.kind = T_IDENT;
        t.len = n;
        if ((n == 3 && strncasecmp(p, "inf", 3) == 0) ||
            (n == 3 && strncasecmp(p, "nan", 3) == 0)) {
            t.kind = T_NUM;
            t.num = tolower((unsigned char)p[0]) == 'i' ? INFINITY : NAN;
        }
        return t;
    }
    return t;
}

static void advance(parser *ps, const tok *t)
{
    ps->lx.p = t->start + t->len;
}

static bool tok_is(const tok *t, const char *word)
{
    return t->kind == T_IDENT && strlen(word) == t->len && strncasecmp(t->start, word, t->len) == 0;
}

static const char *tok_desc(const tok *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case T_EOF:
        return "end of input";
    case T_NUM:
        snprintf(buf, cap, "number \"%.*s\"", (int)t->len, t->start);
        return buf;
    case T_STR:
        return "string";
    case T_IDENT:
        snprintf(buf, cap, "identifier \"%.*s\"", (int)t->len, t->start);
        return buf;
    case T_BAD:
        if (t->len > 1) {
            snprintf(buf, cap, "\"%.*s\"", (int)t->len, t->start);
            return buf;
        }
        break;
    default:
        break;
    }
    snprintf(buf, cap, "\"%.*s\"", (int)t->len, t->start);
    return buf;
}

static iocd_err error_at(parser *ps, const char *at, const char *fmt, ...) IOCD_PRINTF(3, 4);

static iocd_err error_at(parser *ps, const char *at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ps->lx.p = at;
    return pq_lex_error(&ps->lx, "%s", msg);
}

static iocd_err unexpected(parser *ps, const tok *t, const char *context)
{
    char buf[96];

    return error_at(ps, t->start, "unexpected %s%s%s", tok_desc(t, buf, sizeof(buf)),
                    context != NULL ? " " : "", context != NULL ? context : "");
}

static pq_node *node_new(pq_kind kind, query_type type, int pos)
{
    pq_node *n = iocd_calloc(1, sizeof(*n));

    if (n != NULL) {
        n->kind = kind;
        n->type = type;
        n->pos = pos;
    }
    return n;
}

static iocd_err node_add_arg(pq_node *n, pq_node *arg)
{
    pq_node **grown = iocd_realloc(n->args, (n->n_args + 1) * sizeof(*grown));

    if (grown == NULL) {
        pq_node_free(arg);
        return IOCD_ENOMEM;
    }
    n->args = grown;
    n->args[n->n_args++] = arg;
    return IOCD_OK;
}

static void free_names(char **names, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        iocd_free(names[i]);
    iocd_free(names);
}

void pq_node_free(pq_node *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < n->n_args; i++)
        pq_node_free(n->args[i]);
    iocd_free(n->args);
    iocd_free(n->str);
    query_selector_fini(&n->sel);
    free_names(n->grouping, n->n_grouping);
    free_names(n->match, n->n_match);
    free_names(n->include, n->n_include);
    iocd_free(n);
}

static int pos_of(const parser *ps, const char *p)
{
    return (int)(p - ps->lx.src);
}

/* ---- Pieces ------------------------------------------------------------------------------ */

/* A duration at the current position ("5m", "1h30m"); negative only when allow_neg. */
static iocd_err parse_duration(parser *ps, bool allow_neg, int64_t *ms_out)
{
    const char *start, *p;
    char tmp[64];
    bool neg = false;
    int64_t ms;

    skip_ws(ps);
    p = ps->lx.p;
    if (allow_neg && (*p == '-' || *p == '+')) {
        neg = *p == '-';
        p++;
        while (isspace((unsigned char)*p))
            p++;
    }
    start = p;
    while (isalnum((unsigned char)*p) || *p == '.')
        p++;
    if (p == start) {
        tok t;
        ps->lx.p = start;
        t = peek(ps);
        return unexpected(ps, &t, "in duration, expected a duration like 5m");
    }
    if ((size_t)(p - start) >= sizeof(tmp))
        return error_at(ps, start, "bad duration \"%.*s\"", (int)(p - start), start);
    memcpy(tmp, start, (size_t)(p - start));
    tmp[p - start] = '\0';
    if (query_duration_parse(tmp, false, &ms) != IOCD_OK)
        return error_at(ps, start, "bad duration \"%s\": not a valid duration string", tmp);
    ps->lx.p = p;
    *ms_out = neg ? -ms : ms;
    return IOCD_OK;
}

static iocd_err expect(parser *ps, tok_kind kind, const char *what, const char *context)
{
    tok t = peek(ps);
    char ctx[128];

    if (t.kind == kind) {
        advance(ps, &t);
        return IOCD_OK;
    }
    snprintf(ctx, sizeof(ctx), "%s, expected %s", context, what);
    return unexpected(ps, &t, ctx);
}

/* A parenthesised list of label names: "(a, b)"; also "()". */
static iocd_err parse_label_list(parser *ps, char ***names_out, size_t *n_out, const char *ctx)
{
    char **names = NULL;
    size_t n = 0;
    iocd_err err;
    tok t;

    err = expect(ps, T_LPAREN, "\"(\"", ctx);
    if (err != IOCD_OK)
        return err;
    for (;;) {
        char **grown;
        t = peek(ps);
        if (t.kind == T_RPAREN) {
            advance(ps, &t);
            break;
        }
        if (t.kind != T_IDENT || memchr(t.start, ':', t.len) != NULL) {
            free_names(names, n);
            return unexpected(ps, &t, "in grouping opts, expected label");
        }
        grown = iocd_realloc(names, (n + 1) * sizeof(*grown));
        if (grown == NULL || (grown[n] = iocd_strndup(t.start, t.len)) == NULL) {
            free_names(grown != NULL ? grown : names, n);
            return IOCD_ENOMEM;
        }
        names = grown;
        n++;
        advance(ps, &t);
        t = peek(ps);
        if (t.kind == T_COMMA) {
            advance(ps, &t);
            continue;
        }
        if (t.kind != T_RPAREN) {
            free_names(names, n);
            return unexpected(ps, &t, "in grouping opts, expected \",\" or \")\"");
        }
    }
    *names_out = names;
    *n_out = n;
    return IOCD_OK;
}

/* ---- Expressions ------------------------------------------------------------------------- */

static iocd_err parse_expr(parser *ps, int min_prec, pq_node **out);

static int op_prec(pq_op op)
{
    switch (op) {
    case PQ_OP_OR:
        return 1;
    case PQ_OP_AND:
    case PQ_OP_UNLESS:
        return 2;
    case PQ_OP_EQL:
    case PQ_OP_NEQ:
    case PQ_OP_GTR:
    case PQ_OP_LSS:
    case PQ_OP_GTE:
    case PQ_OP_LTE:
        return 3;
    case PQ_OP_ADD:
    case PQ_OP_SUB:
        return 4;
    case PQ_OP_MUL:
    case PQ_OP_DIV:
    case PQ_OP_MOD:
    case PQ_OP_ATAN2:
        return 5;
    case PQ_OP_POW:
        return 6;
    }
    return 0;
}

static bool is_comparison(pq_op op)
{
    return op >= PQ_OP_EQL && op <= PQ_OP_LTE;
}

static bool is_set_op(pq_op op)
{
    return op == PQ_OP_AND || op == PQ_OP_OR || op == PQ_OP_UNLESS;
}

/* The binary operator at t, keywords included; false when t is none. */
static bool binary_op(const tok *t, pq_op *op)
{
    if (t->kind == T_OP) {
        *op = t->op;
        return true;
    }
    if (tok_is(t, "and"))
        *op = PQ_OP_AND;
    else if (tok_is(t, "or"))
        *op = PQ_OP_OR;
    else if (tok_is(t, "unless"))
        *op = PQ_OP_UNLESS;
    else if (tok_is(t, "atan2"))
        *op = PQ_OP_ATAN2;
    else
        return false;
    return true;
}

static const struct {
    const char *name;
    pq_agg agg;
} aggs[] = {
    { "sum", PQ_AGG_SUM },           { "avg", PQ_AGG_AVG },
    { "min", PQ_AGG_MIN },           { "max", PQ_AGG_MAX },
    { "count", PQ_AGG_COUNT },       { "group", PQ_AGG_GROUP },
    { "stddev", PQ_AGG_STDDEV },     { "stdvar", PQ_AGG_STDVAR },
    { "quantile", PQ_AGG_QUANTILE }, { "topk", PQ_AGG_TOPK },
    { "bottomk", PQ_AGG_BOTTOMK },   { "count_values", PQ_AGG_COUNT_VALUES },
};

static bool agg_find(const tok *t, pq_agg *agg)
{
    size_t i;

    for (i = 0; i < sizeof(aggs) / sizeof(aggs[0]); i++)
        if (tok_is(t, aggs[i].name)) {
            *agg = aggs[i].agg;
            return true;
        }
    return false;
}

static iocd_err parse_aggregation(parser *ps, const tok *name, pq_agg agg, pq_node **out)
{
    pq_node *n = node_new(PQ_AGG, QUERY_VECTOR, pos_of(ps, name->start)), *arg = NULL;
    bool have_grouping = false, param = agg == PQ_AGG_QUANTILE || agg == PQ_AGG_TOPK ||
                                        agg == PQ_AGG_BOTTOMK || agg == PQ_AGG_COUNT_VALUES;
    iocd_err err = IOCD_OK;
    tok t;

    if (n == NULL)
        return IOCD_ENOMEM;
    n->agg = agg;
    t = peek(ps);
    if (tok_is(&t, "by") || tok_is(&t, "without")) {
        n->without = tok_is(&t, "without");
        advance(ps, &t);
        err = parse_label_list(ps, &n->grouping, &n->n_grouping, "in grouping opts");
        have_grouping = true;
    }
    if (err == IOCD_OK)
        err = expect(ps, T_LPAREN, "\"(\"", "in aggregation");
    if (err != IOCD_OK)
        goto out;
    t = peek(ps);
    if (t.kind == T_RPAREN) {
        err = error_at(ps, t.start, "no arguments for aggregate expression provided");
        goto out;
    }
    for (;;) {
        err = parse_expr(ps, 0, &arg);
        if (err != IOCD_OK)
            goto out;
        err = node_add_arg(n, arg);
        if (err != IOCD_OK)
            goto out;
        t = peek(ps);
        if (t.kind == T_COMMA) {
            advance(ps, &t);
            continue;
        }
        if (t.kind != T_RPAREN) {
            err = unexpected(ps, &t, "in aggregation, expected \",\" or \")\"");
            goto out;
        }
        advance(ps, &t);
        break;
    }
    if ((size_t)(param ? 2 : 1) != n->n_args) {
        err = error_at(
            ps, name->start,
            "wrong number of arguments for aggregate expression provided, expected %d, got %zu",
            param ? 2 : 1, n->n_args);
        goto out;
    }
    t = peek(ps);
    if (tok_is(&t, "by") || tok_is(&t, "without")) {
        if (have_grouping) {
            err = unexpected(ps, &t, "in aggregation");
            goto out;
        }
        n->without = tok_is(&t, "without");
        advance(ps, &t);
        err = parse_label_list(ps, &n->grouping, &n->n_grouping, "in grouping opts");
        if (err != IOCD_OK)
            goto out;
    }
    /* Types: the last argument is the vector; the parameter a scalar or a string. */
    arg = n->args[n->n_args - 1];
    if (arg->type != QUERY_VECTOR) {
        err = error_at(ps, ps->lx.src + arg->pos,
                       "expected type instant vector in aggregation expression, got %s",
                       type_name(arg->type));
        goto out;
    }
    if (param) {
        query_type want = agg == PQ_AGG_COUNT_VALUES ? QUERY_STRING : QUERY_SCALAR;
        if (n->args[0]->type != want) {
            err = error_at(ps, ps->lx.src + n->args[0]->pos,
                           "expected type %s in aggregation parameter, got %s", type_name(want),
                           type_name(n->args[0]->type));
            goto out;
        }
    }
    *out = n;
    n = NULL;
out:
    pq_node_free(n);
    return err;
}

static iocd_err parse_call(parser *ps, const tok *name, pq_node **out)
{
    const pq_func *fn;
    pq_node *n = NULL, *arg = NULL;
    char fname[64];
    iocd_err err = IOCD_OK;
    size_t i, max;
    tok t;

    snprintf(fname, sizeof(fname), "%.*s", (int)(name->len < 63 ? name->len : 63), name->start);
    fn = pq_func_find(fname);
    if (fn == NULL)
        return error_at(ps, name->start, "unknown function with name \"%s\"", fname);
    n = node_new(PQ_CALL, fn->ret, pos_of(ps, name->start));
    if (n == NULL)
        return IOCD_ENOMEM;
    n->fn = fn;
    t = peek(ps);
    advance(ps, &t); /* the "(" */
    t = peek(ps);
    if (t.kind == T_RPAREN) {
        advance(ps, &t);
    } else {
        for (;;) {
            err = parse_expr(ps, 0, &arg);
            if (err != IOCD_OK)
                goto out;
            err = node_add_arg(n, arg);
            if (err != IOCD_OK)
                goto out;
            t = peek(ps);
            if (t.kind == T_COMMA) {
                advance(ps, &t);
                continue;
            }
            if (t.kind != T_RPAREN) {
                err = unexpected(ps, &t, "in function call, expected \",\" or \")\"");
                goto out;
            }
            advance(ps, &t);
            break;
        }
    }
    max = fn->n_optional < 0 ? SIZE_MAX : (size_t)(fn->n_args + fn->n_optional);
    if (n->n_args < (size_t)fn->n_args || n->n_args > max) {
        if (fn->n_optional == 0)
            err = error_at(ps, name->start, "expected %d argument(s) in call to \"%s\", got %zu",
                           fn->n_args, fname, n->n_args);
        else if (n->n_args < (size_t)fn->n_args)
            err = error_at(ps, name->start,
                           "expected at least %d argument(s) in call to \"%s\", got %zu",
                           fn->n_args, fname, n->n_args);
        else
            err = error_at(ps, name->start,
                           "expected at most %zu argument(s) in call to \"%s\", got %zu", max,
                           fname, n->n_args);
        goto out;
    }
    for (i = 0; i < n->n_args; i++) {
        int k = (int)i < fn->n_args + (fn->n_optional > 0 ? fn->n_optional : 0)
                    ? (int)i
                    : fn->n_args + (fn->n_optional > 0 ? fn->n_optional : 1) - 1;
        query_type want = fn->args[k < 4 ? k : 3];
        if (n->args[i]->type != want) {
            err = error_at(ps, ps->lx.src + n->args[i]->pos,
                           "expected type %s in call to function \"%s\", got %s", type_name(want),
                           fname, type_name(n->args[i]->type));
            goto out;
        }
    }
    *out = n;
    n = NULL;
out:
    pq_node_free(n);
    return err;
}

static iocd_err parse_selector(parser *ps, const tok *name, pq_node **out)
{
    pq_node *n = node_new(PQ_VSEL, QUERY_VECTOR, pos_of(ps, name != NULL ? name->start : ps->lx.p));
    iocd_err err = IOCD_OK;
    bool positive = false;
    size_t i;
    tok t;

    if (n == NULL)
        return IOCD_ENOMEM;
    if (name != NULL) {
        query_matcher *m = iocd_calloc(1, sizeof(*m));
        if (m == NULL) {
            pq_node_free(n);
            return IOCD_ENOMEM;
        }
        n->sel.m = m;
        n->sel.n = 1;
        m->name = iocd_strdup("__name__");
        m->value = iocd_strndup(name->start, name->len);
        m->op = QUERY_MATCH_EQ;
        if (m->name == NULL || m->value == NULL) {
            pq_node_free(n);
            return IOCD_ENOMEM;
        }
        advance(ps, name);
    }
    t = peek(ps);
    if (t.kind == T_LBRACE) {
        ps->lx.p = t.start;
        err = pq_parse_braces(&ps->lx, &n->sel);
        if (err != IOCD_OK) {
            pq_node_free(n);
            return err;
        }
    }
    for (i = 0; i < n->sel.n; i++) {
        if (name != NULL && i > 0 && strcmp(n->sel.m[i].name, "__name__") == 0) {
            err = error_at(ps, ps->lx.src + n->pos,
                           "metric name must not be set twice: \"%.*s\" or \"%s\"", (int)name->len,
                           name->start, n->sel.m[i].value);
            pq_node_free(n);
            return err;
        }
        if (!query_matcher_matches(&n->sel.m[i], "", 0))
            positive = true;
    }
    if (!positive) {
        err = error_at(ps, ps->lx.src + n->pos,
                       "vector selector must contain at least one non-empty matcher");
        pq_node_free(n);
        return err;
    }
    *out = n;
    return IOCD_OK;
}

/* A primary expression and its postfix parts ([range], [range:step], offset, @). */
static iocd_err parse_primary(parser *ps, pq_node **out)
{
    pq_node *n = NULL;
    iocd_err err = IOCD_OK;
    pq_agg agg;
    tok t = peek(ps);

    switch (t.kind) {
    case T_NUM:
        n = node_new(PQ_NUM, QUERY_SCALAR, pos_of(ps, t.start));
        if (n == NULL)
            return IOCD_ENOMEM;
        n->num = t.num;
        advance(ps, &t);
        break;
    case T_STR:
        n = node_new(PQ_STR, QUERY_STRING, pos_of(ps, t.start));
        if (n == NULL)
            return IOCD_ENOMEM;
        err = pq_lex_string(&ps->lx, &n->str);
        break;
    case T_LPAREN:
        advance(ps, &t);
        n = node_new(PQ_PAREN, QUERY_SCALAR, pos_of(ps, t.start));
        if (n == NULL)
            return IOCD_ENOMEM;
        {
            pq_node *inner = NULL;
            err = parse_expr(ps, 0, &inner);
            if (err == IOCD_OK) {
                n->type = inner->type;
                err = node_add_arg(n, inner);
            }
        }
        if (err == IOCD_OK)
            err = expect(ps, T_RPAREN, "\")\"", "in paren expression");
        break;
    case T_LBRACE:
        err = parse_selector(ps, NULL, &n);
        break;
    case T_IDENT: {
        tok after;
        ps->lx.p = t.start + t.len;
        after = peek(ps);
        ps->lx.p = t.start;
        if (agg_find(&t, &agg) &&
            (after.kind == T_LPAREN || tok_is(&after, "by") || tok_is(&after, "without"))) {
            advance(ps, &t);
            err = parse_aggregation(ps, &t, agg, &n);
        } else if (after.kind == T_LPAREN) {
            advance(ps, &t);
            err = parse_call(ps, &t, &n);
        } else {
            pq_op op;
            if (binary_op(&t, &op) || tok_is(&t, "by") || tok_is(&t, "without") ||
                tok_is(&t, "offset") || tok_is(&t, "bool") || tok_is(&t, "on") ||
                tok_is(&t, "ignoring") || tok_is(&t, "group_left") || tok_is(&t, "group_right")) {
                /* keywords are not metric names */
                if (!(after.kind == T_LBRACE))
                    return unexpected(ps, &t, NULL);
            }
            if (agg_find(&t, &agg) && after.kind != T_LBRACE)
                return unexpected(ps, &t, "(aggregation needs parentheses)");
            err = parse_selector(ps, &t, &n);
        }
        break;
    }
    case T_EOF:
        return error_at(ps, t.start, "unexpected end of input");
    default:
        return unexpected(ps, &t, NULL);
    }
    if (err != IOCD_OK) {
        pq_node_free(n);
        return err;
    }
    /* Postfix: ranges and subqueries, then offset and @ in either order. */
    for (;;) {
        bool is_offset, is_at;
        t = peek(ps);
        if (t.kind == T_LBRACKET) {
            int64_t range, step = 0;
            bool subquery = false;
            pq_node *wrap;
            advance(ps, &t);
            err = parse_duration(ps, false, &range);
            if (err != IOCD_OK)
                break;
            skip_ws(ps);
            if (*ps->lx.p == ':') { /* not peek(): ":2m" would lex as a metric name */
                subquery = true;
                ps->lx.p++;
                t = peek(ps);
                if (t.kind != T_RBRACKET) {
                    err = parse_duration(ps, false, &step);
                    if (err != IOCD_OK)
                        break;
                    if (step == 0) {
                        err = error_at(ps, t.start, "zero step in subquery");
                        break;
                    }
                }
            }
            err = expect(ps, T_RBRACKET, "\"]\"",
                         subquery ? "in subquery selector" : "in range selector");
            if (err != IOCD_OK)
                break;
            if (range <= 0) {
                err = error_at(ps, t.start, "duration must be greater than 0");
                break;
            }
            if (!subquery) {
                if (n->kind != PQ_VSEL) {
                    err = error_at(ps, ps->lx.src + n->pos,
                                   "ranges only allowed for vector selectors");
                    break;
                }
                if (n->offset_ms != 0 || n->at != PQ_AT_NONE) {
                    err = error_at(ps, ps->lx.src + n->pos,
                                   "no offset or @ modifiers allowed before range");
                    break;
                }
            } else if (n->type != QUERY_VECTOR) {
                err = error_at(ps, ps->lx.src + n->pos,
                               "subquery is only allowed on instant vector, got %s instead",
                               type_name(n->type));
                break;
            }
            wrap = node_new(subquery ? PQ_SUBQ : PQ_MSEL, QUERY_MATRIX, n->pos);
            if (wrap == NULL) {
                err = IOCD_ENOMEM;
                break;
            }
            wrap->range_ms = range;
            wrap->step_ms = step;
            err = node_add_arg(wrap, n);
            n = wrap;
            if (err != IOCD_OK)
                break;
            continue;
        }
        is_offset = tok_is(&t, "offset");
        is_at = t.kind == T_AT;
        if (!is_offset && !is_at)
            break;
        {
            pq_node *target = n->kind == PQ_MSEL ? n->args[0] : n;
            if (target->kind != PQ_VSEL && target->kind != PQ_SUBQ) {
                err = error_at(ps, t.start,
                               is_offset ? "offset modifier must be preceded by an instant "
                                           "vector selector or range vector selector or a subquery"
                                         : "@ modifier must be preceded by an instant vector "
                                           "selector or range vector selector or a subquery");
                break;
            }
            advance(ps, &t);
            if (is_offset) {
                if (target->offset_ms != 0) {
                    err = error_at(ps, t.start, "offset may not be set multiple times");
                    break;
                }
                err = parse_duration(ps, true, &target->offset_ms);
                if (err != IOCD_OK)
                    break;
                continue;
            }
            if (target->at != PQ_AT_NONE) {
                err = error_at(ps, t.start, "@ <timestamp> may not be set multiple times");
                break;
            }
            t = peek(ps);
            if (tok_is(&t, "start") || tok_is(&t, "end")) {
                target->at = tok_is(&t, "start") ? PQ_AT_START : PQ_AT_END;
                advance(ps, &t);
                err = expect(ps, T_LPAREN, "\"(\"", "in @ modifier");
                if (err == IOCD_OK)
                    err = expect(ps, T_RPAREN, "\")\"", "in @ modifier");
                if (err != IOCD_OK)
                    break;
                continue;
            }
            {
                bool neg = false;
                if (t.kind == T_OP && (t.op == PQ_OP_SUB || t.op == PQ_OP_ADD)) {
                    neg = t.op == PQ_OP_SUB;
                    advance(ps, &t);
                    t = peek(ps);
                }
                if (t.kind != T_NUM) {
                    err =
                        unexpected(ps, &t, "in @ modifier, expected a timestamp, start() or end()");
                    break;
                }
                if (!isfinite(t.num) || fabs(t.num) > 9.2e15) {
                    err =
                        error_at(ps, t.start, "timestamp out of bounds for @ modifier: %g", t.num);
                    break;
                }
                advance(ps, &t);
                target->at = PQ_AT_TIME;
                target->at_ms = (int64_t)llround((neg ? -t.num : t.num) * 1000.0);
            }
        }
    }
    if (err != IOCD_OK) {
        pq_node_free(n);
        return err;
    }
    *out = n;
    return IOCD_OK;
}

static iocd_err parse_unary(parser *ps, pq_node **out)
{
    tok t = peek(ps);
    pq_node *inner = NULL, *n;
    iocd_err err;

    if (t.kind != T_OP || (t.op != PQ_OP_SUB && t.op != PQ_OP_ADD))
        return parse_primary(ps, out);
    advance(ps, &t);
    err = parse_expr(ps, op_prec(PQ_OP_POW), &inner);
    if (err != IOCD_OK)
        return err;
    if (inner->type != QUERY_SCALAR && inner->type != QUERY_VECTOR) {
        err = error_at(
            ps, t.start,
            "unary expression only allowed on expressions of type scalar or instant vector, got %s",
            type_name(inner->type));
        pq_node_free(inner);
        return err;
    }
    if (t.op == PQ_OP_ADD) {
        *out = inner;
        return IOCD_OK;
    }
    if (inner->kind == PQ_NUM) { /* a negative literal */
        inner->num = -inner->num;
        inner->pos = pos_of(ps, t.start);
        *out = inner;
        return IOCD_OK;
    }
    n = node_new(PQ_NEG, inner->type, pos_of(ps, t.start));
    if (n == NULL) {
        pq_node_free(inner);
        return IOCD_ENOMEM;
    }
    err = node_add_arg(n, inner);
    if (err != IOCD_OK) {
        pq_node_free(n);
        return err;
    }
    *out = n;
    return IOCD_OK;
}

/* Modifiers after a binary operator: bool, on/ignoring(...), group_left/right(...). */
static iocd_err parse_bin_modifiers(parser *ps, pq_node *n)
{
    iocd_err err;
    tok t = peek(ps);

    if (tok_is(&t, "bool")) {
        n->ret_bool = true;
        advance(ps, &t);
        t = peek(ps);
    }
    if (tok_is(&t, "on") || tok_is(&t, "ignoring")) {
        n->on = tok_is(&t, "on");
        advance(ps, &t);
        err = parse_label_list(ps, &n->match, &n->n_match, "in grouping opts");
        if (err != IOCD_OK)
            return err;
        t = peek(ps);
        if (tok_is(&t, "group_left") || tok_is(&t, "group_right")) {
            n->card = tok_is(&t, "group_left") ? PQ_CARD_MANY_TO_ONE : PQ_CARD_ONE_TO_MANY;
            advance(ps, &t);
            t = peek(ps);
            if (t.kind == T_LPAREN) {
                err = parse_label_list(ps, &n->include, &n->n_include, "in grouping opts");
                if (err != IOCD_OK)
                    return err;
            }
        }
    }
    return IOCD_OK;
}

static iocd_err check_binary(parser *ps, pq_node *n, const char *at)
{
    query_type lt = n->args[0]->type, rt = n->args[1]->type;
    bool has_matching = n->on || n->n_match > 0 || n->card != PQ_CARD_ONE_TO_ONE;
    size_t i, j;

    if ((lt != QUERY_SCALAR && lt != QUERY_VECTOR) || (rt != QUERY_SCALAR && rt != QUERY_VECTOR))
        return error_at(ps, at,
                        "binary expression must contain only scalar and instant vector types");
    if (n->ret_bool && !is_comparison(n->op))
        return error_at(ps, at, "bool modifier can only be used on comparison operators");
    if (is_comparison(n->op) && lt == QUERY_SCALAR && rt == QUERY_SCALAR && !n->ret_bool)
        return error_at(ps, at, "comparisons between scalars must use BOOL modifier");
    if (is_set_op(n->op) && (lt == QUERY_SCALAR || rt == QUERY_SCALAR))
        return error_at(ps, at, "set operator \"%s\" not allowed in binary scalar expression",
                        n->op == PQ_OP_AND  ? "and"
                        : n->op == PQ_OP_OR ? "or"
                                            : "unless");
    if (has_matching && (lt != QUERY_VECTOR || rt != QUERY_VECTOR))
        return error_at(ps, at, "vector matching only allowed between instant vectors");
    if (is_set_op(n->op)) {
        if (n->card == PQ_CARD_MANY_TO_ONE || n->card == PQ_CARD_ONE_TO_MANY)
            return error_at(ps, at, "no grouping allowed for \"%s\" operation",
                            n->op == PQ_OP_AND  ? "and"
                            : n->op == PQ_OP_OR ? "or"
                                                : "unless");
        n->card = PQ_CARD_MANY_TO_MANY;
    }
    for (i = 0; n->on && i < n->n_include; i++)
        for (j = 0; j < n->n_match; j++)
            if (strcmp(n->include[i], n->match[j]) == 0)
                return error_at(ps, at,
                                "label \"%s\" must not occur in ON and GROUP clause at once",
                                n->include[i]);
    n->type = lt == QUERY_SCALAR && rt == QUERY_SCALAR ? QUERY_SCALAR : QUERY_VECTOR;
    return IOCD_OK;
}

static iocd_err parse_expr(parser *ps, int min_prec, pq_node **out)
{
    pq_node *lhs = NULL, *rhs = NULL, *n;
    iocd_err err;

    if (++ps->depth > DEPTH_MAX) {
        ps->depth--;
        return error_at(ps, ps->lx.p, "expression nested too deeply (more than %d levels)",
                        DEPTH_MAX);
    }
    err = parse_unary(ps, &lhs);
    while (err == IOCD_OK) {
        tok t = peek(ps);
        pq_op op;
        int prec;
        if (!binary_op(&t, &op))
            break;
        prec = op_prec(op);
        if (prec < min_prec)
            break;
        advance(ps, &t);
        n = node_new(PQ_BIN, QUERY_VECTOR, pos_of(ps, t.start));
        if (n == NULL) {
            err = IOCD_ENOMEM;
            break;
        }
        n->op = op;
        err = parse_bin_modifiers(ps, n);
        if (err == IOCD_OK)
            err = parse_expr(ps, op == PQ_OP_POW ? prec : prec + 1, &rhs);
        if (err != IOCD_OK) {
            pq_node_free(n);
            break;
        }
        n->args = iocd_malloc(2 * sizeof(*n->args));
        if (n->args == NULL) {
            pq_node_free(n);
            pq_node_free(rhs);
            err = IOCD_ENOMEM;
            break;
        }
        n->args[0] = lhs;
        n->args[1] = rhs;
        n->n_args = 2;
        lhs = n;
        err = check_binary(ps, n, t.start);
    }
    ps->depth--;
    if (err != IOCD_OK) {
        pq_node_free(lhs);
        return err;
    }
    *out = lhs;
    return IOCD_OK;
}

/* ---- Entry points ------------------------------------------------------------------------ */

iocd_err query_parse(const char *text, query_expr **out, char *errbuf, size_t errlen)
{
    parser ps = { { text, text, errbuf, errlen }, 0 };
    pq_node *root = NULL;
    query_expr *e;
    iocd_err err;
    tok t;

    t = peek(&ps);
    if (t.kind == T_EOF)
        return error_at(&ps, text, "no expression found in input");
    err = parse_expr(&ps, 0, &root);
    if (err != IOCD_OK)
        return err;
    t = peek(&ps);
    if (t.kind != T_EOF) {
        err = unexpected(&ps, &t, NULL);
        pq_node_free(root);
        return err;
    }
    e = iocd_malloc(sizeof(*e));
    if (e == NULL) {
        pq_node_free(root);
        return IOCD_ENOMEM;
    }
    e->root = root;
    *out = e;
    return IOCD_OK;
}

void query_expr_free(query_expr *e)
{
    if (e == NULL)
        return;
    pq_node_free(e->root);
    iocd_free(e);
}

query_type query_expr_type(const query_expr *e)
{
    return e->root->type;
}

static bool node_bounded(const pq_node *n)
{
    size_t i;

    if (n->kind == PQ_SUBQ)
        return false;
    for (i = 0; n->kind == PQ_VSEL && i < n->sel.n; i++)
        if (n->sel.m[i].op != QUERY_MATCH_EQ || n->sel.m[i].value[0] == '\0')
            return false;
    for (i = 0; i < n->n_args; i++)
        if (!node_bounded(n->args[i]))
            return false;
    return true;
}

bool query_expr_bounded(const query_expr *e)
{
    return node_bounded(e->root);
}
