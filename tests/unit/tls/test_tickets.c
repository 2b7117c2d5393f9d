/* tls/tickets.c: the key file parser (a table of vectors) and rotation on disk. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw; CMake defines it for the whole tree */
#endif
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls.h"

/* 160 hex digits: name 00..0f, hmac 10..2f, aes 30..4f */
#define K1                                                                                         \
    "000102030405060708090a0b0c0d0e0f"                                                             \
    "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"                             \
    "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f"
/* same secrets, other names */
#define KN(c)                                                                                      \
    c "00102030405060708090a0b0c0d0e0f"                                                            \
      "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"                           \
      "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f"

static char err[256];

struct vector {
    const char *what;
    const char *text;
    int count;       /* keys expected, or -1 for an error */
    const char *msg; /* substring of the error message */
};

static const struct vector vectors[] = {
    {"one key", K1 "\n", 1, NULL},
    {"no final newline", K1, 1, NULL},
    {"comments, blanks, CRLF, indent", "# header\r\n\r\n   \t\n  " K1 "  \r\n# trailing comment\n",
     1, NULL},
    {"upper case",
     "000102030405060708090A0B0C0D0E0F"
     "101112131415161718191A1B1C1D1E1F202122232425262728292A2B2C2D2E2F"
     "303132333435363738393A3B3C3D3E3F404142434445464748494A4B4C4D4E4F\n",
     1, NULL},
    {"three keys", KN("1") "\n" KN("2") "\n" KN("3") "\n", 3, NULL},
    {"eight keys",
     KN("1") "\n" KN("2") "\n" KN("3") "\n" KN("4") "\n" KN("5") "\n" KN("6") "\n" KN("7") "\n" KN(
         "8") "\n",
     8, NULL},
    {"nine keys",
     KN("1") "\n" KN("2") "\n" KN("3") "\n" KN("4") "\n" KN("5") "\n" KN("6") "\n" KN("7") "\n" KN(
         "8") "\n#\n" KN("9") "\n",
     -1, "line 10: more than 8 keys"},
    {"short line", "# keys\n\n0123456789ab\n", -1, "line 3: expected 160 hex digits, got 12"},
    {"long line", K1 "00\n", -1, "line 1: expected 160 hex digits, got 162"},
    {"not hex", "# x\n" KN("g"), -1, "line 2: column 1: not a hex digit"},
    {"space inside", "0001 02", -1, "line 1: column 5: not a hex digit"},
    {"trailing comment", K1 " # old", -1, "line 1: column 161"},
    {"duplicate name", K1 "\n# again\n" K1 "\n", -1, "line 3: key name repeats the key on line 1"},
    {"empty", "", -1, "no keys"},
    {"only comments", "# nothing yet\n\n", -1, "no keys"},
};

Test(tickets, parse_vectors)
{
    size_t i;

    for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const struct vector *v = &vectors[i];
        struct tls_ticket_keys keys;
        int rc;

        err[0] = '\0';
        rc = tls_ticket_keys_parse(v->text, strlen(v->text), &keys, err, sizeof err);
        if (v->count < 0) {
            cr_expect_eq(rc, -1, "%s: accepted", v->what);
            cr_expect_not_null(strstr(err, v->msg), "%s: message \"%s\", want \"%s\"", v->what, err,
                               v->msg);
        } else {
            cr_expect_eq(rc, 0, "%s: %s", v->what, err);
            cr_expect_eq(keys.count, (unsigned)v->count, "%s", v->what);
        }
    }
}

Test(tickets, parse_splits_name_hmac_aes)
{
    struct tls_ticket_keys keys;
    unsigned i;

    cr_assert_eq(tls_ticket_keys_parse(K1, strlen(K1), &keys, err, sizeof err), 0, "%s", err);
    for (i = 0; i < TLS_TICKET_NAME_LEN; i++)
        cr_expect_eq(keys.keys[0].name[i], i);
    for (i = 0; i < TLS_TICKET_SECRET_LEN; i++) {
        cr_expect_eq(keys.keys[0].hmac_key[i], 0x10 + i);
        cr_expect_eq(keys.keys[0].aes_key[i], 0x30 + i);
    }
}

Test(tickets, parse_keeps_file_order)
{
    const char *text = KN("3") "\n" KN("1") "\n" KN("2") "\n";
    struct tls_ticket_keys keys;

    cr_assert_eq(tls_ticket_keys_parse(text, strlen(text), &keys, err, sizeof err), 0);
    cr_expect_eq(keys.keys[0].name[0], 0x30);
    cr_expect_eq(keys.keys[1].name[0], 0x10);
    cr_expect_eq(keys.keys[2].name[0], 0x20);
}

Test(tickets, parse_rejects_nul_byte)
{
    static const char text[] = "00\0"
                               "00";
    struct tls_ticket_keys keys;

    cr_expect_eq(tls_ticket_keys_parse(text, sizeof text - 1, &keys, err, sizeof err), -1);
    cr_expect_str_eq(err, "line 1: column 3: not a hex digit (0x00)");
}

/* The parser must not read past len: the text need not be NUL-terminated. */
Test(tickets, parse_respects_length)
{
    char *buf = malloc(strlen(K1));
    struct tls_ticket_keys keys;

    memcpy(buf, K1, strlen(K1));
    cr_expect_eq(tls_ticket_keys_parse(buf, strlen(K1), &keys, err, sizeof err), 0, "%s", err);
    cr_expect_eq(tls_ticket_keys_parse(buf, 100, &keys, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "got 100"), "%s", err);
    free(buf);
}

/* ---- files ---- */

static char dir[64];
static char path[128];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void dir_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cmg-tickets-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tickets.key", dir);
}

static void dir_teardown(void)
{
    if (dir[0])
        nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_text(const char *text)
{
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static struct tls_ticket_keys load(void)
{
    struct tls_ticket_keys keys;

    cr_assert_eq(tls_ticket_keys_load(path, &keys, err, sizeof err), 0, "%s", err);
    return keys;
}

static unsigned dir_entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static mode_t file_mode(void)
{
    struct stat st;

    cr_assert_eq(stat(path, &st), 0);
    return st.st_mode & 07777;
}

TestSuite(tickets_file, .init = dir_setup, .fini = dir_teardown);

Test(tickets_file, load_names_file_and_line)
{
    char want[256];
    struct tls_ticket_keys keys;

    write_text(K1 "\n0123456789ab\n");
    cr_expect_eq(tls_ticket_keys_load(path, &keys, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:2: expected 160 hex digits, got 12", path);
    cr_expect_str_eq(err, want);
}

Test(tickets_file, load_missing_file)
{
    struct tls_ticket_keys keys;

    cr_expect_eq(tls_ticket_keys_load(path, &keys, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, path), "%s", err);
    cr_expect_not_null(strstr(err, "No such file"), "%s", err);
}

Test(tickets_file, load_refuses_huge_file)
{
    FILE *f = fopen(path, "w");
    struct tls_ticket_keys keys;
    int i;

    cr_assert_not_null(f);
    for (i = 0; i < 1000; i++)
        fputs("# padding padding padding padding padding padding padding padding padding\n", f);
    fclose(f);
    cr_expect_eq(tls_ticket_keys_load(path, &keys, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "larger than"), "%s", err);
}

Test(tickets_file, rotate_creates_0600_file)
{
    struct tls_ticket_keys keys;
    FILE *f;
    char line[256];

    umask(0); /* the mode must not depend on the caller's umask */
    cr_assert_eq(tls_ticket_keys_rotate_file(path, 3, err, sizeof err), 0, "%s", err);
    cr_expect_eq(file_mode(), 0600, "mode %o", file_mode());
    keys = load();
    cr_expect_eq(keys.count, 1);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_expect_eq(line[0], '#', "first line is a comment: %s", line);
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_expect_eq(strlen(line), 161u, "second line is a key");
    fclose(f);
    cr_expect_eq(dir_entries(), 1u, "no temporary file left");
}

Test(tickets_file, rotate_keeps_order_and_count)
{
    struct tls_ticket_keys before, after;
    int round;
    unsigned i;

    memset(&before, 0, sizeof before);
    for (round = 0; round < 6; round++) {
        cr_assert_eq(tls_ticket_keys_rotate_file(path, 3, err, sizeof err), 0, "%s", err);
        after = load();
        cr_expect_eq(after.count, round < 2 ? (unsigned)round + 1 : 3u, "round %d", round);
        /* the old keys moved down by one, the oldest fell off */
        for (i = 1; i < after.count; i++)
            cr_expect_eq(memcmp(&after.keys[i], &before.keys[i - 1], sizeof after.keys[i]), 0,
                         "round %d key %u", round, i);
        for (i = 0; i < before.count; i++)
            cr_expect_neq(memcmp(after.keys[0].name, before.keys[i].name, TLS_TICKET_NAME_LEN), 0,
                          "new key name is fresh");
        cr_expect_neq(memcmp(after.keys[0].hmac_key, after.keys[0].aes_key, TLS_TICKET_SECRET_LEN),
                      0);
        before = after;
    }
    cr_expect_eq(dir_entries(), 1u, "no temporary file left");
}

Test(tickets_file, rotate_shrinks_to_keep)
{
    int i;

    for (i = 0; i < 5; i++)
        cr_assert_eq(tls_ticket_keys_rotate_file(path, 8, err, sizeof err), 0, "%s", err);
    cr_expect_eq(load().count, 5u);
    cr_assert_eq(tls_ticket_keys_rotate_file(path, 1, err, sizeof err), 0, "%s", err);
    cr_expect_eq(load().count, 1u);
}

Test(tickets_file, rotate_tightens_mode_of_existing_file)
{
    write_text(K1 "\n");
    cr_assert_eq(chmod(path, 0644), 0);
    cr_assert_eq(tls_ticket_keys_rotate_file(path, 2, err, sizeof err), 0, "%s", err);
    cr_expect_eq(file_mode(), 0600);
    cr_expect_eq(load().keys[1].name[1], 0x01, "the hand-written key is second");
}

Test(tickets_file, rotate_starts_from_comment_only_file)
{
    write_text("# created by the operator\n");
    cr_assert_eq(tls_ticket_keys_rotate_file(path, 3, err, sizeof err), 0, "%s", err);
    cr_expect_eq(load().count, 1u);
}

Test(tickets_file, rotate_rejects_bad_keep)
{
    cr_expect_eq(tls_ticket_keys_rotate_file(path, 0, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, "keep"), "%s", err);
    cr_expect_eq(tls_ticket_keys_rotate_file(path, TLS_TICKET_KEYS_MAX + 1, err, sizeof err), -1);
    cr_expect_eq(access(path, F_OK), -1, "nothing written");
}

/* A broken file is left alone: overwriting it would drop keys the gateways still use. */
Test(tickets_file, rotate_keeps_broken_file)
{
    struct stat st, now;

    write_text(K1 "\nnot a key\n");
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(tls_ticket_keys_rotate_file(path, 3, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, ":2:"), "%s", err);
    cr_assert_eq(stat(path, &now), 0);
    cr_expect_eq(now.st_ino, st.st_ino, "file not replaced");
    cr_expect_eq(now.st_size, st.st_size);
    cr_expect_eq(dir_entries(), 1u);
}

Test(tickets_file, rotate_in_missing_directory)
{
    char missing[160];

    snprintf(missing, sizeof missing, "%s/nope/tickets.key", dir);
    cr_expect_eq(tls_ticket_keys_rotate_file(missing, 3, err, sizeof err), -1);
    cr_expect_not_null(strstr(err, missing), "%s", err);
}

/* A relative path puts the temporary file in the current directory, beside the target. */
Test(tickets_file, rotate_relative_path)
{
    cr_assert_eq(chdir(dir), 0);
    cr_assert_eq(tls_ticket_keys_rotate_file("tickets.key", 3, err, sizeof err), 0, "%s", err);
    cr_expect_eq(load().count, 1u);
    cr_expect_eq(dir_entries(), 1u);
}
