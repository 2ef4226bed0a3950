/*
 * cmd_codec_helper.c — `agora codec-helper`, hidden: a decoder helper of
 * the pool that decodes untrusted pixel data at arm's length (codec.h,
 * "Decoding at arm's length").  Started by the archive itself with its
 * descriptors in place; run by hand it says so and exits with status 2.
 */
#include "cli/cli.h"
#include "codec/codec.h"

int cmd_codec_helper(int argc, char **argv)
{
    return codec_sandbox_helper_main(argc, argv);
}
