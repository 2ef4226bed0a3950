/*
 * charset_int.h — internal to src/dicom/: the test seam of charset.c.
 *
 * charset.c keeps a small per-thread cache of iconv descriptors (iconv_open
 * costs microseconds and dicom_charset_to_utf8() sits on the query and JSON
 * paths).  A thread's descriptors are closed when the thread exits, through
 * a pthread key destructor.  Destructors do not run for the main thread
 * when it returns from main(): its descriptors stay reachable through its
 * TLS until the process ends, which LeakSanitizer does not report.  Tests
 * that want an exact account call dicom__charset_cache_clear() anyway.
 */
#ifndef AG_DICOM_CHARSET_INT_H
#define AG_DICOM_CHARSET_INT_H

#include <stddef.h>

/** Close the calling thread's cached iconv descriptors.  Always safe. */
void dicom__charset_cache_clear(void);

/** Number of descriptors the calling thread has cached (for tests). */
size_t dicom__charset_cache_count(void);

#endif
