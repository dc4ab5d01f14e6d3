/* Unit test for common/urlpattern.c: brace expansion order and padding, the schemes accepted, each error
 * the parser reports (code, key phrase and character position), and index/buffer checks of upm_urlpat_get. */
#include "urlpattern.h"

#include "check.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>


/* Checks that pattern parses, has the given scheme, and expands to exactly want[0..n) in that order. */
#define EXPECT_URLS(pattern, scheme, ...)                                                                            \
    do {                                                                                                             \
        const char *want_[] = {__VA_ARGS__};                                                                         \
        expect_urls(__FILE__, __LINE__, pattern, scheme, want_, sizeof want_ / sizeof want_[0]);                     \
    } while (0)

/* Checks that pattern is refused with UPM_EUSAGE and a message containing each given phrase. */
#define EXPECT_ERR(pattern, ...)                                                                                     \
    do {                                                                                                             \
        const char *phrases_[] = {__VA_ARGS__};                                                                      \
        expect_err(__FILE__, __LINE__, pattern, phrases_, sizeof phrases_ / sizeof phrases_[0]);                     \
    } while (0)

static void expect_urls(const char *file, int line, const char *pattern, upm_url_scheme scheme, const char **want,
                        size_t n)
{
    upm_err err;
    upm_urlpat *p = NULL;
    char buf[256];

    upm_err_clear(&err);
    int rc = upm_urlpat_parse(pattern, &p, &err);
    if (rc != UPM_OK || !p) {
        fprintf(stderr, "%s:%d: \"%s\" refused (%d): %s\n", file, line, pattern, rc, err.msg);
        failures++;
        return;
    }
    if (upm_urlpat_scheme(p) != scheme) {
        fprintf(stderr, "%s:%d: \"%s\": scheme %d, want %d\n", file, line, pattern, (int)upm_urlpat_scheme(p),
                (int)scheme);
        failures++;
    }
    if (upm_urlpat_count(p) != n) {
        fprintf(stderr, "%s:%d: \"%s\": count %" PRIu64 ", want %zu\n", file, line, pattern, upm_urlpat_count(p), n);
        failures++;
    }
    for (size_t i = 0; i < n && i < upm_urlpat_count(p); i++) {
        int len = upm_urlpat_get(p, i, buf, sizeof buf, &err);
        if (len < 0 || strcmp(buf, want[i]) != 0 || (size_t)len != strlen(want[i])) {
            fprintf(stderr, "%s:%d: \"%s\"[%zu] = \"%s\" (%d), want \"%s\"\n", file, line, pattern, i,
                    len < 0 ? err.msg : buf, len, want[i]);
            failures++;
        }
    }
    upm_urlpat_free(p);
}

static void expect_err(const char *file, int line, const char *pattern, const char **phrases, size_t n)
{
    upm_err err;
    upm_urlpat *p = (upm_urlpat *)&err; /* not NULL, to check that parse clears it on error */

    upm_err_clear(&err);
    int rc = upm_urlpat_parse(pattern, &p, &err);
    if (rc != UPM_EUSAGE || p != NULL || err.code != UPM_EUSAGE) {
        fprintf(stderr, "%s:%d: \"%s\": rc %d, want UPM_EUSAGE (%s)\n", file, line, pattern, rc, err.msg);
        failures++;
        if (rc == UPM_OK)
            upm_urlpat_free(p);
        return;
    }
    if (strchr(err.msg, '\n')) {
        fprintf(stderr, "%s:%d: \"%s\": message spans lines: %s\n", file, line, pattern, err.msg);
        failures++;
    }
    if (strncmp(err.msg, "invalid shard URL pattern \"", 27) != 0) {
        fprintf(stderr, "%s:%d: \"%s\": message does not name the pattern: %s\n", file, line, pattern, err.msg);
        failures++;
    }
    for (size_t i = 0; i < n; i++) {
        if (!strstr(err.msg, phrases[i])) {
            fprintf(stderr, "%s:%d: \"%s\": message lacks \"%s\": %s\n", file, line, pattern, phrases[i], err.msg);
            failures++;
        }
    }
}

static void test_ranges(void)
{
    EXPECT_URLS("/d/s-{000000..000003}.tar", UPM_URL_PATH, "/d/s-000000.tar", "/d/s-000001.tar", "/d/s-000002.tar",
                "/d/s-000003.tar");
    EXPECT_URLS("/d/{8..11}", UPM_URL_PATH, "/d/8", "/d/9", "/d/10", "/d/11");
    EXPECT_URLS("/d/{08..11}", UPM_URL_PATH, "/d/08", "/d/09", "/d/10", "/d/11");
    EXPECT_URLS("/d/{8..011}", UPM_URL_PATH, "/d/008", "/d/009", "/d/010", "/d/011");
    EXPECT_URLS("/d/{0..2}", UPM_URL_PATH, "/d/0", "/d/1", "/d/2"); /* a lone "0" does not ask for padding */
    EXPECT_URLS("/d/{0..0}", UPM_URL_PATH, "/d/0");
    EXPECT_URLS("/d/{7..7}x", UPM_URL_PATH, "/d/7x");
    EXPECT_URLS("/d/{999999999999999998..999999999999999999}", UPM_URL_PATH, "/d/999999999999999998",
                "/d/999999999999999999");
}

static void test_lists_and_order(void)
{
    EXPECT_URLS("/d/{a,b,c}.tar", UPM_URL_PATH, "/d/a.tar", "/d/b.tar", "/d/c.tar");
    EXPECT_URLS("/d/x{a,}.tar", UPM_URL_PATH, "/d/xa.tar", "/d/x.tar");
    EXPECT_URLS("/d/x{,a}", UPM_URL_PATH, "/d/x", "/d/xa");
    EXPECT_URLS("/d/{,}", UPM_URL_PATH, "/d/", "/d/");
    EXPECT_URLS("/d/{a..b,c}", UPM_URL_PATH, "/d/a..b", "/d/c"); /* a comma makes it a list, as in bash */
    EXPECT_URLS("a{0..1}b{x,y}", UPM_URL_PATH, "a0bx", "a0by", "a1bx", "a1by");
    EXPECT_URLS("{train,val}/{0..1}-{00..01}", UPM_URL_PATH, "train/0-00", "train/0-01", "train/1-00", "train/1-01",
                "val/0-00", "val/0-01", "val/1-00", "val/1-01");
    EXPECT_URLS("/data/x.tar", UPM_URL_PATH, "/data/x.tar");
}

static void test_schemes(void)
{
    EXPECT_URLS("/data/s-{0..1}.tar", UPM_URL_PATH, "/data/s-0.tar", "/data/s-1.tar");
    EXPECT_URLS("shards/s-{0..1}.tar", UPM_URL_PATH, "shards/s-0.tar", "shards/s-1.tar");
    EXPECT_URLS("s.tar", UPM_URL_PATH, "s.tar");
    EXPECT_URLS("./a:b.tar", UPM_URL_PATH, "./a:b.tar"); /* "./" is not a scheme */
    EXPECT_URLS("{a,b}/x.tar", UPM_URL_PATH, "a/x.tar", "b/x.tar");
    EXPECT_URLS("file:///data/s-{0..1}.tar", UPM_URL_FILE, "file:///data/s-0.tar", "file:///data/s-1.tar");
    EXPECT_URLS("file://localhost/data/x.tar", UPM_URL_FILE, "file://localhost/data/x.tar");
    EXPECT_URLS("FILE:///x", UPM_URL_FILE, "FILE:///x");
    EXPECT_URLS("http://host/cc/{0..1}.tar", UPM_URL_HTTP, "http://host/cc/0.tar", "http://host/cc/1.tar");
    EXPECT_URLS("HTTP://host/x", UPM_URL_HTTP, "HTTP://host/x");
    EXPECT_URLS("https://h.example:8443/s-{000..001}.tar", UPM_URL_HTTPS, "https://h.example:8443/s-000.tar",
                "https://h.example:8443/s-001.tar");
    EXPECT_URLS("https://[::1]:443/x", UPM_URL_HTTPS, "https://[::1]:443/x");
    EXPECT_URLS("http://h:65535/x", UPM_URL_HTTP, "http://h:65535/x");
    EXPECT_URLS("http://h:1/{a,b}", UPM_URL_HTTP, "http://h:1/a", "http://h:1/b");
}

static void test_scheme_errors(void)
{
    EXPECT_ERR("ftp://h/x.tar", "unsupported scheme \"ftp\"", "http://", "https://", "file://");
    EXPECT_ERR("pipe:curl x", "whitespace"); /* whitespace is checked before the scheme */
    EXPECT_ERR("pipe:cat", "unsupported scheme \"pipe\"");
    EXPECT_ERR("gopher://h/x", "unsupported scheme \"gopher\"");
    EXPECT_ERR("s3://bucket/x-{0..9}", "unsupported scheme \"s3\"");
    EXPECT_ERR("data:x.tar", "unsupported scheme \"data\"");
    EXPECT_ERR("{http,ftp}://x/y", "braces are not allowed in the scheme or host", "character 1");
    EXPECT_ERR("shard{0..9}:x", "braces are not allowed in the scheme or host", "character 6");
    EXPECT_ERR("x{a:,b}/y", "braces are not allowed in the scheme or host", "character 2");
    EXPECT_ERR("http://h{1,2}.example/x", "braces are not allowed in the scheme or host", "character 9");
    EXPECT_ERR("http://h:{80,81}/x", "braces are not allowed in the scheme or host", "character 10");
    EXPECT_ERR("https://{a,b}", "braces are not allowed in the scheme or host", "character 9");
    EXPECT_ERR("file://{a,b}/x", "braces are not allowed in the scheme or host", "character 8");
    EXPECT_ERR("file://otherhost/data/x", "host \"otherhost\"");
    EXPECT_ERR("file:/data/x", "file://");
    EXPECT_ERR("file://", "path");
    EXPECT_ERR("http:/h/x", "http://");
    EXPECT_ERR("http:///x", "empty host", "character 8");
    EXPECT_ERR("http://:80/x", "empty host");
    EXPECT_ERR("http://h", "no path");
    EXPECT_ERR("http://h:/x", "invalid port", "1 to 65535");
    EXPECT_ERR("http://h:0/x", "invalid port \"0\"");
    EXPECT_ERR("http://h:65536/x", "invalid port \"65536\"", "character 10");
    EXPECT_ERR("http://h:8o/x", "invalid port");
    EXPECT_ERR("http://[::1/x", "unclosed '['");
}

static void test_char_errors(void)
{
    EXPECT_ERR("", "empty");
    EXPECT_ERR("/d/a b", "whitespace", "0x20", "character 5");
    EXPECT_ERR("/d/a\tb", "0x09", "character 5");
    EXPECT_ERR("/d/a\nb", "0x0a", "character 5");
    EXPECT_ERR("/d/\x7f", "0x7f", "character 4");
    EXPECT_ERR("/d/\x1b[0m", "\\x1b", "character 4"); /* quoted escaped, so the message stays one line */

    upm_err err;
    upm_urlpat *p = NULL;
    CHECK(upm_urlpat_parse(NULL, &p, &err) == UPM_EUSAGE && p == NULL);
    CHECK(upm_urlpat_parse("/x", NULL, &err) == UPM_EUSAGE);
}

static void test_brace_errors(void)
{
    upm_err err;
    upm_urlpat *p = NULL;
    CHECK(upm_urlpat_parse("x-{1..", &p, &err) == UPM_EUSAGE);
    CHECK(strstr(err.msg, "invalid shard URL pattern \"x-{1..\": unbalanced '{' at character 3") == err.msg);

    EXPECT_ERR("/d/{0..1", "unbalanced '{'", "character 4");
    EXPECT_ERR("/d/{a,b}{", "unbalanced '{'", "character 9");
    EXPECT_ERR("/d/0..1}", "stray '}'", "character 8");
    EXPECT_ERR("/d/{a}}", "stray '}'", "character 7");
    EXPECT_ERR("/d/{a,{b,c}}", "nested", "character 7");
    EXPECT_ERR("/d/{9..0}", "reversed range {9..0}: the start must not exceed the end", "character 4");
    EXPECT_ERR("/d/{10..9}", "reversed range {10..9}", "character 4");
    EXPECT_ERR("/d/{a..z}", "{a..z}", "integers", "character 4");
    EXPECT_ERR("/d/{1..x}", "{1..x}", "integers", "character 4");
    EXPECT_ERR("/d/{-1..3}", "integers", "character 4");
    EXPECT_ERR("/d/{..3}", "integers", "character 4");
    EXPECT_ERR("/d/{1..}", "integers", "character 4");
    EXPECT_ERR("/d/{1...3}", "integers", "character 4");
    EXPECT_ERR("/d/{0000000000000000000..1}", "integers", "18", "character 4"); /* 19 digits */
    EXPECT_ERR("/d/{0..9..2}", "step", "character 4");
    EXPECT_ERR("/d/x{}", "empty group {}", "character 5");
    EXPECT_ERR("/d/{abc}", "{abc}", "neither", "{A..B}", "{a,b}", "character 4");
    EXPECT_ERR("/d/{1}", "neither", "character 4");
}

static void test_huge_counts(void)
{
    upm_err err;
    upm_urlpat *p = NULL;
    char buf[64];

    CHECK(upm_urlpat_parse("/d/{0..999999}{0..999999}", &p, &err) == UPM_OK);
    if (p) {
        CHECK(upm_urlpat_count(p) == UINT64_C(1000000000000));
        CHECK(upm_urlpat_get(p, 0, buf, sizeof buf, &err) == 5 && strcmp(buf, "/d/00") == 0);
        CHECK(upm_urlpat_get(p, 1000001, buf, sizeof buf, &err) == 5 && strcmp(buf, "/d/11") == 0);
        CHECK(upm_urlpat_get(p, UINT64_C(999999999999), buf, sizeof buf, &err) == 15 &&
              strcmp(buf, "/d/999999999999") == 0);
        CHECK(upm_urlpat_get(p, UINT64_C(1000000000000), buf, sizeof buf, &err) == UPM_EUSAGE);
        CHECK(strstr(err.msg, "out of range") != NULL);
        upm_urlpat_free(p);
    }
    EXPECT_ERR("/d/{0..999999}{0..999999}{0..9}", "more than 1000000000000 URLs", "character 26");
    EXPECT_ERR("/d/{0..999999999999999999}{0..1}", "more than 1000000000000 URLs", "character 4");
    CHECK(upm_urlpat_parse("https://h/{0..999999999999}/x", &p, &err) == UPM_OK);
    if (p) {
        CHECK(upm_urlpat_scheme(p) == UPM_URL_HTTPS);
        CHECK(upm_urlpat_count(p) == UINT64_C(1000000000000));
        CHECK(upm_urlpat_get(p, 10, buf, sizeof buf, &err) == 14 && strcmp(buf, "https://h/10/x") == 0);
        CHECK(upm_urlpat_get(p, UINT64_C(123456789012), buf, sizeof buf, &err) > 0 &&
              strcmp(buf, "https://h/123456789012/x") == 0);
        upm_urlpat_free(p);
    }
}

static void test_get_errors(void)
{
    upm_err err;
    upm_urlpat *p = NULL;
    char buf[16];

    CHECK(upm_urlpat_parse("/d/s-{00..11}.tar", &p, &err) == UPM_OK);
    if (!p)
        return;
    CHECK(upm_urlpat_count(p) == 12);
    CHECK(upm_urlpat_get(p, 12, buf, sizeof buf, &err) == UPM_EUSAGE);
    CHECK(strstr(err.msg, "out of range") && strstr(err.msg, "12") && strstr(err.msg, "/d/s-{00..11}.tar"));
    CHECK(upm_urlpat_get(p, UINT64_MAX, buf, sizeof buf, &err) == UPM_EUSAGE);
    /* "/d/s-11.tar" is 11 characters: 12 bytes fit, 11 do not. */
    CHECK(upm_urlpat_get(p, 11, buf, 12, &err) == 11 && strcmp(buf, "/d/s-11.tar") == 0);
    CHECK(upm_urlpat_get(p, 11, buf, 11, &err) == UPM_EUSAGE);
    CHECK(strstr(err.msg, "too small") && strstr(err.msg, "12 bytes"));
    CHECK(upm_urlpat_get(p, 0, NULL, 0, &err) == UPM_EUSAGE);
    CHECK(upm_urlpat_get(NULL, 0, buf, sizeof buf, &err) == UPM_EUSAGE);
    CHECK(upm_urlpat_get(p, 3, buf, sizeof buf, NULL) == 11 && strcmp(buf, "/d/s-03.tar") == 0);
    upm_urlpat_free(p);
    upm_urlpat_free(NULL);
}

int main(void)
{
    test_ranges();
    test_lists_and_order();
    test_schemes();
    test_scheme_errors();
    test_char_errors();
    test_brace_errors();
    test_huge_counts();
    test_get_errors();
    if (failures) {
        fprintf(stderr, "test_urlpattern: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_urlpattern: all checks passed\n");
    return 0;
}
