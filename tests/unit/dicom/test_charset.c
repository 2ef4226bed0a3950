/*
 * test_charset.c — dicom_charset_to_utf8() and dicom_charset_supported()
 * (PS3.5 §6.1, PS3.3 C.12.1.1.2).
 *
 * Byte strings come from PS3.5 Annexes H, I, J and K and from the Patient's
 * Name of pydicom's charset test files (chrFren.dcm, chrH31.dcm, ...), each
 * named where it is used.  Expected strings are UTF-8 literals.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dicom/charset_int.h"
#include "dicom/dicom.h"

#include <pthread.h>
#include <string.h>

#define FFFD "\xef\xbf\xbd"

/* Decode and compare; in is a string literal (its length is sizeof - 1). */
#define CHECK(cs, vr, in, want) \
    check((cs), (vr), (const uint8_t *)(in), sizeof(in) - 1, (want))

static void check(const char *cs, DicomVR vr, const uint8_t *in, size_t n,
                  const char *want)
{
    AgArena *a = ag_arena_create(1 << 20);
    assert_non_null(a);
    AgError err = {0};
    char *out = NULL;
    size_t len = 0;
    int rc = dicom_charset_to_utf8(cs, vr, in, n, a, &out, &len, &err);
    if (rc != AG_OK) {
        fail_msg("charset \"%s\": rc %d: %s", cs ? cs : "(null)", rc,
                 err.msg);
    }
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    ag_arena_destroy(a);
}

/* ---- default repertoire and the ASCII fast path ---------------------- */

static void test_ascii_fast_path(void **state)
{
    (void)state;
    static const char *const sets[] = {
        NULL, "", "ISO_IR 100", "ISO_IR 192", "GB18030", "GBK",
        "ISO 2022 IR 6\\ISO 2022 IR 87", "\\ISO 2022 IR 149", "ISO_IR 13",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        CHECK(sets[i], DICOM_VR_PN, "Doe^John\\Roe^Jane ",
              "Doe^John\\Roe^Jane ");
    }
    CHECK(NULL, DICOM_VR_LO, "", "");
}

static void test_empty_input_may_be_null(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(4096);
    char *out = NULL;
    size_t len = 99;
    assert_int_equal(dicom_charset_to_utf8("ISO_IR 100", DICOM_VR_LO, NULL,
                                           0, a, &out, &len, NULL), AG_OK);
    assert_string_equal(out, "");
    assert_int_equal(len, 0);
    /* out_len may be NULL */
    assert_int_equal(dicom_charset_to_utf8(NULL, DICOM_VR_LO,
                                           (const uint8_t *)"x", 1, a, &out,
                                           NULL, NULL), AG_OK);
    assert_string_equal(out, "x");
    ag_arena_destroy(a);
}

/* Lenient: no G1 designated, bytes >= 0x80 read as ISO 8859-1. */
static void test_default_repertoire_is_latin1(void **state)
{
    (void)state;
    CHECK(NULL, DICOM_VR_PN, "Buc^J\xe9r\xf4me", "Buc^Jérôme");
    CHECK("", DICOM_VR_PN, "Buc^J\xe9r\xf4me", "Buc^Jérôme");
    CHECK("ISO 2022 IR 6", DICOM_VR_LO, "\xc4" "b", "Äb");
    CHECK("ISO_IR 6", DICOM_VR_LO, "\xc4" "b", "Äb");
    /* C1 bytes are C1 controls in ISO 8859-1 */
    CHECK(NULL, DICOM_VR_LO, "\x80\x9f", "\xc2\x80\xc2\x9f");
}

/* ---- single-byte sets (PS3.3 Table C.12-2) ---------------------------- */

static void test_latin1(void **state)
{
    (void)state;
    /* chrFren.dcm, chrGerm.dcm */
    CHECK("ISO_IR 100", DICOM_VR_PN, "Buc^J\xe9r\xf4me", "Buc^Jérôme");
    CHECK("ISO_IR 100", DICOM_VR_PN, "\xc4neas^R\xfc" "diger ",
          "Äneas^Rüdiger ");
    CHECK(" ISO_IR 100 ", DICOM_VR_PN, "J\xe9r\xf4me", "Jérôme");
    /* chrFrenMulti.dcm: two values */
    CHECK("ISO_IR 100", DICOM_VR_PN,
          "Buc^J\xe9r\xf4me\\Buc^J\xe9r\xf4me ",
          "Buc^Jérôme\\Buc^Jérôme ");
}

static void test_other_single_byte_sets(void **state)
{
    (void)state;
    /* chrGreek.dcm */
    CHECK("ISO_IR 126", DICOM_VR_PN, "\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2 ",
          "Διονυσιος ");
    /* chrRuss.dcm (its Latin c, e, y, p are in the file) */
    CHECK("ISO_IR 144", DICOM_VR_PN, "\xbb\xee\xda" "ce\xdc\xd1yp\xd3",
          "Люкceмбypг");
    /* chrArab.dcm */
    CHECK("ISO_IR 127", DICOM_VR_PN,
          "\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1 ", "قباني^لنزار ");
    /* chrHbrw.dcm */
    CHECK("ISO_IR 138", DICOM_VR_PN, "\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4",
          "שרון^דבורה");
    /* TIS 620 */
    CHECK("ISO_IR 166", DICOM_VR_PN, "\xca\xc1\xaa\xd2\xc2^\xe3\xa8\xb4\xd5",
          "สมชาย^ใจดี");
    CHECK("ISO_IR 101", DICOM_VR_PN, "Dvo\xf8\xe1k^\xa3ukasz",
          "Dvořák^Łukasz");
    CHECK("ISO_IR 109", DICOM_VR_LO, "\xd5u\xbf" "eppi", "Ġużeppi");
    CHECK("ISO_IR 110", DICOM_VR_LO, "\xd3\xbani\xf1\xb9", "Ķēniņš");
    CHECK("ISO_IR 148", DICOM_VR_PN, "\xde\xfckr\xfc^\xc7" "a\xf0lar",
          "Şükrü^Çağlar");
    CHECK("ISO_IR 203", DICOM_VR_LO, "\xbcuvre^\xa4", "Œuvre^€");
    /* The same sets with code extensions, no escapes used. */
    CHECK("ISO 2022 IR 126", DICOM_VR_LO, "\xe1", "α");
    CHECK("ISO 2022 IR 144", DICOM_VR_LO, "\xb0", "А");
    CHECK("ISO 2022 IR 203", DICOM_VR_LO, "\xa4", "€");
}

/* Unassigned positions become U+FFFD and decoding continues. */
static void test_single_byte_unassigned(void **state)
{
    (void)state;
    CHECK("ISO_IR 126", DICOM_VR_LO, "a\xae" "b\xe1", "a" FFFD "bα");
    CHECK("ISO_IR 138", DICOM_VR_LO, "\xff\xf9", FFFD "ש");
    CHECK("ISO_IR 166", DICOM_VR_LO, "\xa0\xff\xca", FFFD FFFD "ส");
}

/* ISO_IR 13: JIS X 0201 katakana in GR, Roman (read as ASCII) in GL. */
static void test_jis_x0201(void **state)
{
    (void)state;
    CHECK("ISO_IR 13", DICOM_VR_PN, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3",
          "ﾔﾏﾀﾞ^ﾀﾛｳ");
    /* 0x5C stays the delimiter, not YEN SIGN; 0xA0 and 0xE0 are not
     * katakana. */
    CHECK("ISO_IR 13", DICOM_VR_LO, "\xb1\\\xa0\xe0", "ｱ\\" FFFD FFFD);
}

/* ---- ISO 2022 code extensions ---------------------------------------- */

/* PS3.5 H.3.1, chrH31.dcm: "\ISO 2022 IR 87". */
static void test_japanese_ir87(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87", DICOM_VR_PN,
          "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B"
          "^\x1b$B$?$m$&\x1b(B",
          "Yamada^Tarou=山田^太郎=やまだ^たろう");
    /* chrJapMultiExplicitIR6.dcm: value 1 given explicitly */
    CHECK("ISO 2022 IR 6\\ISO 2022 IR 87", DICOM_VR_PN,
          "\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B ", "やまだ^たろう ");
}

/* PS3.5 H.3.2, chrH32.dcm: "ISO 2022 IR 13\ISO 2022 IR 87". */
static void test_japanese_ir13_ir87(void **state)
{
    (void)state;
    CHECK("ISO 2022 IR 13\\ISO 2022 IR 87", DICOM_VR_PN,
          "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J="
          "\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
          "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
}

/* chrJapMulti.dcm: two PN values, and an LT. */
static void test_japanese_multi_valued(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87", DICOM_VR_PN,
          "\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B\\\x1b$B$d$^$@\x1b(B^"
          "\x1b$B$?$m$&\x1b(B ",
          "やまだ^たろう\\やまだ^たろう ");
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LT, "\x1b$B$?$m$&\x1b(B", "たろう");
}

/* JIS X 0212 (ISO 2022 IR 159), G0 via ESC $ ( D. */
static void test_japanese_ir159(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87\\ISO 2022 IR 159", DICOM_VR_LO,
          "a\x1b$(D0!\x1b$B;3\x1b(Bb", "a丂山b");
}

/*
 * In a two-byte G0 set, 0x5C, 0x5E and 0x3D are halves of kanji, not
 * delimiters: 0x30 0x5C is 移, 0x30 0x5E is 緯.
 */
static void test_jis_delimiter_bytes_inside_kanji(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87", DICOM_VR_PN, "\x1b$B0\\0^\x1b(B^x",
          "移緯^x");
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LO, "\x1b$B0\\\x1b(B\\x", "移\\x");
}

/* SPACE reads as SPACE in a two-byte set; a lone byte is half a kanji. */
static void test_jis_space_and_odd_byte(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LO, "\x1b$B;3 ED\x1b(B", "山 田");
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LO, "\x1b$B;3E\x1b(Bx", "山" FFFD "x");
    /* 0x7F 0x7F is not a character: DEL is a control, and resets. */
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LT, "\x1b$B;3\x7f;3", "山\x7f;3");
    /* an unmapped pair is one U+FFFD */
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LO, "\x1b$B\x7e\x7e;3\x1b(B",
          FFFD "山");
}

/* PS3.5 I.2, chrI2.dcm: "\ISO 2022 IR 149", G1 re-designated after '^'. */
static void test_korean(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 149", DICOM_VR_PN,
          "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C"
          "\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
          "Hong^Gildong=洪^吉洞=홍^길동");
    /* chrKoreanMulti.dcm */
    CHECK("\\ISO 2022 IR 149", DICOM_VR_PN,
          "\x1b$)C\xb1\xe8\xc8\xf1\xc1\xdf\x1b(B\\\x1b$)C\xb1\xe8\xc8\xf1"
          "\xc1\xdf\x1b(B ",
          "김희중\\김희중 ");
    CHECK("\\ISO 2022 IR 149", DICOM_VR_LT,
          "\x1b$)C\xb1\xe8\xc8\xf1\xc1\xdf\x1b(B ", "김희중 ");
    /* an unmapped pair is one U+FFFD; a lone lead byte another */
    CHECK("\\ISO 2022 IR 149", DICOM_VR_LO,
          "\x1b$)C\xc9\xa1\xb1\xe8\xb1", FFFD "김" FFFD);
}

/*
 * Lenient: Korean devices often write "\ISO 2022 IR 149" (or just
 * "ISO 2022 IR 149") and bare EUC-KR without the escape.
 */
static void test_korean_without_escape(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 149", DICOM_VR_PN, "\xb1\xe8\xc8\xf1\xc1\xdf",
          "김희중");
    CHECK("ISO 2022 IR 149", DICOM_VR_PN, "\xb1\xe8^\xc8\xf1",
          "김^희");
}

/* PS3.5 K.2: "\ISO 2022 IR 58" (GB 2312 in G1). */
static void test_chinese_ir58(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 58", DICOM_VR_PN,
          "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab= ",
          "Zhang^XiaoDong=张^小东= ");
}

/* PS3.5 J.1/J.2, chrX1.dcm and chrX2.dcm; GBK. */
static void test_chinese_standalone(void **state)
{
    (void)state;
    CHECK("ISO_IR 192", DICOM_VR_PN,
          "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1= ",
          "Wang^XiaoDong=王^小東= ");
    CHECK("GB18030", DICOM_VR_PN,
          "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=",
          "Wang^XiaoDong=王^小东=");
    /* four-byte sequence (U+20087) and the two-byte euro sign */
    CHECK("GB18030", DICOM_VR_LO, "\x95" "2\x90" "1\xa2\xe3", "𠂇€");
    /* GBK: the trail byte 0x7C ('|') is not a character of its own */
    CHECK("GBK", DICOM_VR_PN, "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\x96|=",
          "Wang^XiaoDong=王^小東=");
    /* the stand-alone sets ignore further values (PS3.5 6.1.2.5.4 d) */
    CHECK("ISO_IR 192\\ISO 2022 IR 100", DICOM_VR_LO, "\xc3\xa9", "é");
}

static void test_gb_invalid(void **state)
{
    (void)state;
    CHECK("GB18030", DICOM_VR_LO, "a\x80" "b\xff" "c", "a" FFFD "b" FFFD "c");
    /* a truncated four-byte sequence at the end */
    CHECK("GB18030", DICOM_VR_LO, "x\x95" "2", "x" FFFD "2");
    /* ESC is an ordinary control byte here */
    CHECK("GB18030", DICOM_VR_LO, "\x1b$B\xcd\xf5", "\x1b$B王");
}

/* ---- ISO_IR 192 validation ------------------------------------------- */

static void test_utf8_valid_passes(void **state)
{
    (void)state;
    CHECK("ISO_IR 192", DICOM_VR_LO, "é€𐍈\xef\xbf\xbf", "é€𐍈\xef\xbf\xbf");
}

/* One U+FFFD per maximal ill-formed subpart (Unicode §3.9). */
static void test_utf8_invalid(void **state)
{
    (void)state;
    CHECK("ISO_IR 192", DICOM_VR_LO, "a\x80" "b", "a" FFFD "b");
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xc0\xaf", FFFD FFFD);   /* overlong */
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xe0\x80\xaf", FFFD FFFD FFFD);
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xed\xa0\x80", FFFD FFFD FFFD);
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xf4\x90\x80\x80",
          FFFD FFFD FFFD FFFD);                               /* > 10FFFF */
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xf5\xff", FFFD FFFD);
    /* truncated: one U+FFFD for the valid prefix */
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xe2\x82" "x", FFFD "x");
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xf0\x9f\x98", FFFD);
    CHECK("ISO_IR 192", DICOM_VR_LO, "\xe2\x82\xe2\x82\xac", FFFD "€");
}

/* ---- the reset rule (PS3.5 §6.1.2.5.3) -------------------------------- */

static void test_reset_at_value_delimiter(void **state)
{
    (void)state;
    const char *cs = "ISO 2022 IR 100\\ISO 2022 IR 126";
    /* '\' ends the value: the second value is in value 1's set again. */
    CHECK(cs, DICOM_VR_LO, "\x1b-F\xe1\\\xe9", "α\\é");
    /* In a text VR, '\' is a character and Greek stays active. */
    CHECK(cs, DICOM_VR_LT, "\x1b-F\xe1\\\xe9", "α\\ι");
    /* PN: '^' and '=' reset too; other VRs keep them as characters. */
    CHECK(cs, DICOM_VR_PN, "\x1b-F\xe1^\xe9=\x1b-F\xe1=\xe9", "α^é=α=é");
    CHECK(cs, DICOM_VR_LO, "\x1b-F\xe1^\xe9", "α^ι");
    /* Control characters reset whatever the VR. */
    CHECK(cs, DICOM_VR_LT, "\x1b-F\xe1\r\n\xe9\t\x1b-F\xe1\f\xe9",
          "α\r\né\tα\fé");
    /* VR unknown: only controls reset. */
    CHECK(cs, DICOM_VR_NONE, "\x1b-F\xe1\\\xe9\n\xe9", "α\\ι\né");
}

/* G0 resets as well: a JIS run left open ends at the delimiter... */
static void test_reset_g0_at_control(void **state)
{
    (void)state;
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LT, "\x1b$B;3\r\n;3", "山\r\n;3");
    /* ...and ESC ( B switches G0 back without touching G1. */
    CHECK("ISO 2022 IR 100\\ISO 2022 IR 87", DICOM_VR_LO,
          "\xe9\x1b$B;3\x1b(B\xe9", "é山é");
}

/* ---- escape sequences ------------------------------------------------- */

static void test_escape_sequences(void **state)
{
    (void)state;
    const char *cs = "ISO 2022 IR 6\\ISO 2022 IR 100\\ISO 2022 IR 101\\"
                     "ISO 2022 IR 109\\ISO 2022 IR 110\\ISO 2022 IR 144\\"
                     "ISO 2022 IR 127\\ISO 2022 IR 126\\ISO 2022 IR 138\\"
                     "ISO 2022 IR 148\\ISO 2022 IR 203\\ISO 2022 IR 166\\"
                     "ISO 2022 IR 13";
    assert_true(dicom_charset_supported(cs));
    CHECK(cs, DICOM_VR_LT,
          "\x1b-A\xe9\x1b-B\xa3\x1b-C\xd5\x1b-D\xd3\x1b-L\xb0\x1b-G\xc7"
          "\x1b-F\xe1\x1b-H\xf9\x1b-M\xde\x1b-b\xa4\x1b-T\xca\x1b)I\xb1"
          "\x1b(Jx\x1b(By",
          "éŁĠĶАاαשŞ€สｱxy");
    /* ESC $ @ (JIS C 6226-1978) and ESC $ ( B read as JIS X 0208 */
    CHECK("\\ISO 2022 IR 87", DICOM_VR_LO, "\x1b$@;3\x1b$(BED\x1b(B",
          "山田");
}

static void test_unknown_escape(void **state)
{
    (void)state;
    /* a well-formed but unknown sequence is one U+FFFD */
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "a\x1b$)Zb", "a" FFFD "b");
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "a\x1b-Zb", "a" FFFD "b");
    /* malformed: only the ESC is replaced */
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "a\x1b", "a" FFFD);
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "a\x1b$)", "a" FFFD "$)");
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "a\x1b\xe9", "a" FFFD "é");
    CHECK("ISO 2022 IR 100", DICOM_VR_LO, "\x1b    A", FFFD "    A");
    /* escapes are honoured under a single-byte term too (lenient) */
    CHECK("ISO_IR 100", DICOM_VR_LO, "\x1b-F\xe1", "α");
    CHECK(NULL, DICOM_VR_LO, "\x1b$B;3\x1b(B", "山");
}

/* ---- terms ------------------------------------------------------------- */

static void test_unknown_term(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(4096);
    AgError err = {0};
    char *out = NULL;
    int rc = dicom_charset_to_utf8("ISO_IR 999", DICOM_VR_LO,
                                   (const uint8_t *)"abc", 3, a, &out, NULL,
                                   &err);
    assert_int_equal(rc, AG_ERR_UNSUPPORTED);
    assert_int_equal(err.code, AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "\"ISO_IR 999\""));
    assert_null(out);
    /* in a later value; the message says which */
    rc = dicom_charset_to_utf8("ISO 2022 IR 6\\ISO 2022 IR 88", DICOM_VR_LO,
                               (const uint8_t *)"abc", 3, a, &out, NULL,
                               &err);
    assert_int_equal(rc, AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "\"ISO 2022 IR 88\" (value 2)"));
    /* hostile bytes are quoted printable and truncated */
    rc = dicom_charset_to_utf8("\x01\xff" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                               DICOM_VR_LO, (const uint8_t *)"a", 1, a, &out,
                               NULL, &err);
    assert_int_equal(rc, AG_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "\"??AAAA"));
    assert_non_null(strstr(err.msg, "A...\""));
    ag_arena_destroy(a);
}

static void test_supported(void **state)
{
    (void)state;
    assert_true(dicom_charset_supported(NULL));
    assert_true(dicom_charset_supported(""));
    assert_true(dicom_charset_supported("ISO_IR 100"));
    assert_true(dicom_charset_supported(" ISO_IR 192 "));
    assert_true(dicom_charset_supported("GB18030"));
    assert_true(dicom_charset_supported("GBK"));
    assert_true(dicom_charset_supported("\\ISO 2022 IR 87"));
    assert_true(dicom_charset_supported("ISO 2022 IR 13\\ISO 2022 IR 87"));
    assert_true(dicom_charset_supported(
        "\\ISO 2022 IR 149\\ISO 2022 IR 58\\ISO 2022 IR 159"));
    assert_true(dicom_charset_supported("ISO 2022 IR 100\\"));
    assert_false(dicom_charset_supported("ISO_IR 99"));
    assert_false(dicom_charset_supported("iso_ir 100"));   /* CS is exact */
    assert_false(dicom_charset_supported("ISO_IR_100"));
    assert_false(dicom_charset_supported("ISO 2022 IR 6\\ISO 2022 IR 192"));
    assert_false(dicom_charset_supported("ISO_IR 100\\UTF-8"));
    assert_false(dicom_charset_supported("ISO_IR 1000"));
}

/* ---- memory ------------------------------------------------------------ */

/* Fail allocation n for n = 1, 2, ... until the call succeeds. */
static void test_oom(void **state)
{
    (void)state;
    static const struct {
        const char *cs;
        const char *in;
    } cases[] = {
        {"\\ISO 2022 IR 87", "Yamada^Tarou=\x1b$B;3ED\x1b(B"},
        {NULL, "plain ascii"},
        {"ISO_IR 192", "\xe7\x8e\x8b"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int n = 1;; n++) {
            AgArena *a = ag_arena_create(1 << 16);
            assert_non_null(a);
            char *out = NULL;
            AgError err = {0};
            ag_test_fail_nth_alloc(n);
            int rc = dicom_charset_to_utf8(
                cases[c].cs, DICOM_VR_PN, (const uint8_t *)cases[c].in,
                strlen(cases[c].in), a, &out, NULL, &err);
            ag_test_fail_nth_alloc(0);
            ag_arena_destroy(a);
            if (rc == AG_OK) {
                assert_true(n > 1);
                break;
            }
            assert_int_equal(rc, AG_ERR_NOMEM);
            assert_int_equal(err.code, AG_ERR_NOMEM);
            assert_null(out);
        }
    }
}

/* The output allocation counts against the arena's budget. */
static void test_budget(void **state)
{
    (void)state;
    AgArena *a = ag_arena_create(64);
    char *out = NULL;
    AgError err = {0};
    uint8_t in[100];
    memset(in, 0xe9, sizeof in);
    int rc = dicom_charset_to_utf8("ISO_IR 100", DICOM_VR_LT, in, sizeof in,
                                   a, &out, NULL, &err);
    assert_int_equal(rc, AG_ERR_LIMIT);
    assert_null(out);
    rc = dicom_charset_to_utf8(NULL, DICOM_VR_LT, (const uint8_t *)"abc", 3,
                               a, &out, NULL, &err);
    assert_int_equal(rc, AG_OK);
    assert_string_equal(out, "abc");
    ag_arena_destroy(a);
}

/* Every byte value in every mode, long enough to cross JIS chunks: output
 * stays within its bound (ASan) and is valid UTF-8. */
static bool utf8_valid(const char *s, size_t n)
{
    AgArena *a = ag_arena_create(0);
    char *out = NULL;
    int rc = dicom_charset_to_utf8("ISO_IR 192", DICOM_VR_LT,
                                   (const uint8_t *)s, n, a, &out, NULL,
                                   NULL);
    bool same = rc == AG_OK && memcmp(out, s, n) == 0;
    ag_arena_destroy(a);
    return same;
}

static void test_all_bytes_all_sets(void **state)
{
    (void)state;
    static const char *const sets[] = {
        NULL, "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110",
        "ISO_IR 144", "ISO_IR 127", "ISO_IR 126", "ISO_IR 138",
        "ISO_IR 148", "ISO_IR 203", "ISO_IR 13", "ISO_IR 166",
        "ISO_IR 192", "GB18030", "GBK", "\\ISO 2022 IR 87",
        "\\ISO 2022 IR 159", "\\ISO 2022 IR 149", "\\ISO 2022 IR 58",
    };
    static const char *const prefixes[] = {
        "", "\x1b$B", "\x1b$(D", "\x1b$)C", "\x1b$)A", "\x1b)I", "\x1b-T",
    };
    uint8_t in[8 + 3 * 256];
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        size_t k = strlen(prefixes[p]);
        memcpy(in, prefixes[p], k);
        for (int b = 0; b < 256; b++) {     /* every byte, and pairs */
            in[k + 2 * b] = (uint8_t)b;
            in[k + 2 * b + 1] = (uint8_t)(b ^ 0x80);
        }
        for (int b = 0; b < 256; b++) {
            in[k + 512 + b] = (uint8_t)(0x21 + b % 94);
        }
        size_t n = k + 768;
        for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
            AgArena *a = ag_arena_create(0);
            char *out = NULL;
            size_t len = 0;
            int rc = dicom_charset_to_utf8(sets[s], DICOM_VR_PN, in, n, a,
                                           &out, &len, NULL);
            assert_int_equal(rc, AG_OK);
            assert_int_equal(strlen(out) <= len, true);
            assert_true(len <= 3 * n);
            assert_true(utf8_valid(out, len));
            ag_arena_destroy(a);
        }
    }
    dicom__charset_cache_clear();
}

/* ---- the iconv cache --------------------------------------------------- */

static void test_cache(void **state)
{
    (void)state;
    dicom__charset_cache_clear();
    assert_int_equal(dicom__charset_cache_count(), 0);
    CHECK("ISO_IR 126", DICOM_VR_LO, "\xe1", "α");
    CHECK("ISO_IR 126", DICOM_VR_LO, "\xe2", "β");
    assert_int_equal(dicom__charset_cache_count(), 1);
    /* Latin-1 and katakana need no descriptor */
    CHECK("ISO_IR 100", DICOM_VR_LO, "\xe9", "é");
    CHECK("ISO_IR 13", DICOM_VR_LO, "\xb1", "ｱ");
    assert_int_equal(dicom__charset_cache_count(), 1);
    /* more sets than slots: the oldest are evicted, results stay right */
    static const struct {
        const char *cs;
        const char *in;
        const char *want;
    } many[] = {
        {"ISO_IR 101", "\xa3", "Ł"}, {"ISO_IR 109", "\xd5", "Ġ"},
        {"ISO_IR 110", "\xd3", "Ķ"}, {"ISO_IR 144", "\xb0", "А"},
        {"ISO_IR 127", "\xc7", "ا"}, {"ISO_IR 138", "\xf9", "ש"},
        {"ISO_IR 148", "\xde", "Ş"}, {"ISO_IR 203", "\xa4", "€"},
        {"ISO_IR 166", "\xca", "ส"}, {"GB18030", "\xcd\xf5", "王"},
        {"GBK", "\xcd\xf5", "王"},   {"ISO_IR 126", "\xe1", "α"},
    };
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) {
            check(many[i].cs, DICOM_VR_LO, (const uint8_t *)many[i].in,
                  strlen(many[i].in), many[i].want);
        }
    }
    assert_int_equal(dicom__charset_cache_count(), 8);
    dicom__charset_cache_clear();
    assert_int_equal(dicom__charset_cache_count(), 0);
    CHECK("ISO_IR 126", DICOM_VR_LO, "\xe1", "α");
    assert_int_equal(dicom__charset_cache_count(), 1);
    dicom__charset_cache_clear();
}

/* A thread's descriptors are closed when it exits (LeakSanitizer checks). */
static void *thread_main(void *arg)
{
    (void)arg;
    AgArena *a = ag_arena_create(4096);
    char *out = NULL;
    int rc = dicom_charset_to_utf8("\\ISO 2022 IR 149", DICOM_VR_PN,
                                   (const uint8_t *)"\x1b$)C\xc8\xab", 6, a,
                                   &out, NULL, NULL);
    bool ok = rc == AG_OK && strcmp(out, "홍") == 0 &&
              dicom__charset_cache_count() == 1;
    rc = dicom_charset_to_utf8("ISO_IR 126", DICOM_VR_LO,
                               (const uint8_t *)"\xe1", 1, a, &out, NULL,
                               NULL);
    ok = ok && rc == AG_OK && strcmp(out, "α") == 0 &&
         dicom__charset_cache_count() == 2;
    ag_arena_destroy(a);
    return ok ? arg : NULL;
}

static void test_cache_per_thread(void **state)
{
    (void)state;
    dicom__charset_cache_clear();
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        void *res = NULL;
        int token;
        assert_int_equal(pthread_create(&t, NULL, thread_main, &token), 0);
        assert_int_equal(pthread_join(t, &res), 0);
        assert_ptr_equal(res, &token);
    }
    /* the threads' descriptors were their own */
    assert_int_equal(dicom__charset_cache_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_fast_path),
        cmocka_unit_test(test_empty_input_may_be_null),
        cmocka_unit_test(test_default_repertoire_is_latin1),
        cmocka_unit_test(test_latin1),
        cmocka_unit_test(test_other_single_byte_sets),
        cmocka_unit_test(test_single_byte_unassigned),
        cmocka_unit_test(test_jis_x0201),
        cmocka_unit_test(test_japanese_ir87),
        cmocka_unit_test(test_japanese_ir13_ir87),
        cmocka_unit_test(test_japanese_multi_valued),
        cmocka_unit_test(test_japanese_ir159),
        cmocka_unit_test(test_jis_delimiter_bytes_inside_kanji),
        cmocka_unit_test(test_jis_space_and_odd_byte),
        cmocka_unit_test(test_korean),
        cmocka_unit_test(test_korean_without_escape),
        cmocka_unit_test(test_chinese_ir58),
        cmocka_unit_test(test_chinese_standalone),
        cmocka_unit_test(test_gb_invalid),
        cmocka_unit_test(test_utf8_valid_passes),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_reset_at_value_delimiter),
        cmocka_unit_test(test_reset_g0_at_control),
        cmocka_unit_test(test_escape_sequences),
        cmocka_unit_test(test_unknown_escape),
        cmocka_unit_test(test_unknown_term),
        cmocka_unit_test(test_supported),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_all_bytes_all_sets),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_cache_per_thread),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    dicom__charset_cache_clear();
    return failed;
}
