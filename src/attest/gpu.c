/* NVIDIA GPU evidence (see gpu.h): NVML through nvml_loader on one helper thread per source
 * with a deadline and a process-wide "one collection at a time" gate, nvtrust's payload
 * shape byte for byte, and nvtrust's canned no-GPU evidence. */
#include "attest/gpu.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/hex.h"
#include "core/log.h"
#include "core/pem.h"
#include "nvidia/evidence.h"
#include "nvidia/nvml_loader.h"

/* ---- embedded public data: NVIDIA/nvtrust @ 02817309 (Apache-2.0), verbatim ---- */
/* nvtrust samples/hopperAttestationReport.txt (hex, 4117 bytes of report) */
static const char canned_report_hex[] =
    "11e001ff931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb001160000040c00d00010133"
    "000130000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000020133000130008048dfd18fe229bf16eb9d30cca0f11a24dafe6eb731de1462984645a0b189b77c4e4e17de"
    "727a5e19e3d07de51da33803013300013000164f445c3e282ca8e4ab07c2179b8e02c8e3a2ceb83f9fae8dddaee70aa5"
    "7207d87792d1481b46c02f9dba6e1fe1e77e0401330001300073bbf35822549e28ba8fb2671fb7b58f46424a0069205b"
    "3ecf1d0fa762adef90b538cc9d692eb5c050147f2f1e8214ab05013300013000568b89291a34cece03b12aaa352d9afe"
    "273610307525b8443e90faa78d82ecfa9c7827d8f7915c35b2fab972e108668606013300013000c9e4fe668e9dc269a4"
    "657146b5e28a22347cde18a4b0e79d8146532f27ebc386f304400ea5d4bf4159b5a6916dd4564e070133000130006850"
    "b0a82e7e77c0f51e0e6732163866003390c4eb286d8dfb26a72f711a9c8bcdf402a1fd4e5d70b97708107a785efc0801"
    "330001300080161aac5e7509f038a6457b111e048207d1dc0e78edbb8c172fca4139c1d5f29cda67ecdd261fdc9203b7"
    "6387f7389f09013300013000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000a013300013000059b32e712a153f490dbfb7976a9e275d789e28bd4803c357def2b6123"
    "327c430526bfaecc200f496d4e149fc5eade030b01330001300000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000c013300013000413d008cedd5526a79455a17815432"
    "8ce960af252bdb06e7fe4080049add412488cac39ecf3d80efbdc6bdd3638617730d0133000130000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000e01330001300000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000f"
    "013300013000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000100133000130000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000001101330001300000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000012013300013000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000130133000130000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000001401330001300000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000015013300013000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "1601330001300068454d4bb5545a74e478e288469a6548bb4d4aa8556a512f9ddd41b0337a602b3f050a469578139c6c"
    "ea0e0f7c9861c817013300013000cf98e425ebfb0c20532162d772d5b355bbabc68b0876a3c91a676769a3d6e8460e01"
    "be987669f8196ec63b7b6a8d858118013300013000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000190133000130000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000001a013300013000b718948c035092ebd0c7d6f069"
    "141e6bd0cd40d8ddd436aa0d1a705afedfe67c12891d239e6ddf30ea09775d1056ac1a1b0133000130006dbc7f8e23ac"
    "6f69c4bf3cb4c61566d7957fce2f0f16a499ac1f724bacb0935eefa5be16f548ba5141449f43555f240c1c0133000130"
    "002191a06d9fad030cb8a707391f2e51838d8ca1e17109325b155f774ddcb2bf704ca023ba711a282c93a1afcd590ce2"
    "0b1d01330001300000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000001e0133000130001d040fdc3c8de3d8afbcebb79bf3a9ec09a277651b7ace16627f6201c90414d991"
    "7b57a7bd67482b1929c9ec0bd1a15d1f0133000130001bd45c8a34c33ac6a316050cb0752aa648ac4c6cd26af165cec4"
    "16557468d21f7a61b6c5c7c4ea6d131be9270659393920013300013000a0d52c35704f13bf52745f27f16285292a7d8e"
    "9b8011320c18a58effd1a7934abb414ef99809ec9852568552904d361e210133000130009f976e82fa30fcc6f82bce2c"
    "942ad4707c3df6b76e6295ce4c95cf9bb62a08392571e9fb787f19b31bf0f3f04ba887a622013300013000198b81d9c0"
    "cefe0b33ad65de3fad238a5461d8ee32487bf70fc1926041408cb114624b8ca6b0d5fc97028b58d9cdb78d2301330001"
    "300007bbc504d3327cb76d4c4f3b3f1daf8779e40cc31d60826cb11dcc5d09dc59a83bf693f0fb9b1f0b5e58ed4cdc3a"
    "580f24013300013000c0962ed90316ecea959dd0b6632d0c4f4d3bfbf72c4cd9031efe48154ed9ca59b41cd20ce06a7f"
    "9ca5cd8b0687cf12582501330001300010570f642e274cfc2b9f1c955fab0aa56b6193d5c5ea271a74eb976433486569"
    "5921456dc1ca383d7edf9e67760937ca26013300013000fccd6efa76267f5b43fc4a7647ce843a3912f0944a9bcc9074"
    "56408c368ad5e85bec4512d9d9aedebab31c3b8095062727013300013000c7ea135dca389918789454861bb593095dc4"
    "4f8ad39035665daa81fa02cf6fbd3a18227b6224dced70288b9fd3161cc0280133000130005d7a8a08deeeeef3df0782"
    "8dafeb112bd2372504d324eff2f4eb43893315fe331428c9afbc52fcc06159d406f0ca90af290133000130009d2c6389"
    "c070dde430ffd510cad0c546fb9a73b9ee7a478fa804d2ab14c674487abdc7aa12d90215ced4f3678f2765fa2a013300"
    "013000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000002b0133000130000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000002c01330001300000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000002d013300013000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000002e0133000130000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000002f01330001300000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000030013300013000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000310133"
    "000130000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000003201330001300000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000033013300013000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000340133000130000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000003501330001300000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000036013300013000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000370133000130000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000003801"
    "330001300000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000039013300013000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000003a0133000130000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000003b01330001300000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000003c013300013000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000003d0133000130000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000003e01330001300000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000003f"
    "013300013000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000400133000130000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000b4b8a06aaaa35542839388e159d447a5d6f6194998fd86513e2d591ccf640985a60106"
    "000800009f0096010000000e000400b10300000f00090038383200000000000010000500300000000011000500313031"
    "300012000500303230300013000200000003000a003535302e39302e3037000400080080010000000000000c00000100"
    "000000010000000400000001000000010000000100000001000000010000000000000001000000000000008200000000"
    "000000000000000000000000000000000000000000000000000000000000000000000002000000020000000000000000"
    "000000010000000100000001000000000000000100000001000000010000000100000001000000020000000100000001"
    "000000010000000100000001000000010000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000d00040000c001000b0001005514003000f5c384aebb579217a2c66b17ed0f28e6"
    "a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d150001005590d679ad2c04147eb31f4a"
    "99ff8f4f8ad1bce8f750e1bb75f266506c88a84150e8671ed5513b7718f5808e5b222661b21aa90dae6c655e652959c8"
    "046b5f81feb7b00db3fe1ae97e81d50b02ec9cc64c96f8d0dd5f3be286f82eb98fe07e67d0"
    ;
/* nvtrust samples/hopperCertChain.txt (5 PEM certificates, leaf first) */
static const char canned_cert_chain_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIDfTCCAwKgAwIBAgIUU8IroV5daAiCgtoHTtn7N6pYV3EwCgYIKoZIzj0EAwMw\n"
    "ZDEbMBkGA1UEBRMSNDE0MzFENDgwRkU1RTg3Mjc0MQswCQYDVQQGEwJVUzEbMBkG\n"
    "A1UECgwSTlZJRElBIENvcnBvcmF0aW9uMRswGQYDVQQDDBJHSDEwMCBBMDEgR1NQ\n"
    "IEJST00wIBcNMjAxMDE3MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMHwxMTAvBgNV\n"
    "BAUTKDUzQzIyQkExNUU1RDY4MDg4MjgyREEwNzRFRDlGQjM3QUE1ODU3NzExCzAJ\n"
    "BgNVBAYTAlVTMRswGQYDVQQKDBJOVklESUEgQ29ycG9yYXRpb24xHTAbBgNVBAMM\n"
    "FEdIMTAwIEEwMSBHU1AgRk1DIExGMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEgDPx\n"
    "q23XZIuWevUXqLFHMD7bTiPOocq/1+RPjdVkBDxIlQpP2AjxfBSIYYcCN55G0vjO\n"
    "UFeFv8cx4NJSoCYyPWK/EvFNdyy3RNv00pdWU3ZAQmGOcorOJ+eUnWR/6Wjto4IB\n"
    "WTCCAVUwDgYDVR0PAQH/BAQDAgeAMB0GA1UdDgQWBBTTwiuhXl1oCIKC2gdO2fs3\n"
    "qlhXcTAfBgNVHSMEGDAWgBTPzHFrUzj0etDtUvSant7I+soqTzA4BgNVHREEMTAv\n"
    "oC0GCisGAQQBgxyCEgGgHwwdTlZJRElBOkdIMTAwOjQ4QjAyRDkyNDk0QkFERjQw\n"
    "gcgGBmeBBQUEAQSBvTCBugIBATB2MBAGByqGSM49AgEGBSuBBAAiA2IABE9Q2m4E\n"
    "enmB6sPZ4qh+gs85UTtdyS+/GuP5v+8IW5KaDhKJSMFQAumGGCpY1gS16l5C/p5H\n"
    "7i21IYxsxrUedEtgfcdse7hYDNoE2yexPpSbzTB6WSeKiTjnrbexkGdvlzA9Bglg\n"
    "hkgBZQMEAgIEMPXDhK67V5IXosZrF+0PKOapuNY5BBrNe0chzsAE9ydUlLqUu1zf\n"
    "2zBV7gUXYrH3XTAKBggqhkjOPQQDAwNpADBmAjEA7ooRPcqt9nC1Yo+zRV2NG2cP\n"
    "kG2mt2xVrp7KvoF7xs1mpXbGSo4Ye4bgcYOWJ/CEAjEArMWN40TlJ1DuDKV1jw10\n"
    "xoRzSZuvnn41eav2pKu0Pkoa2Cdy5Sk9lv0fIB1vsKAf\n"
    "-----END CERTIFICATE-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIICUDCCAdagAwIBAgIJQUMdSA/l6HJ0MAoGCCqGSM49BAMDMFMxJzAlBgNVBAMM\n"
    "Hk5WSURJQSBHSDEwMCBQcm92aXNpb25lciBJQ0EgMTEbMBkGA1UECgwSTlZJRElB\n"
    "IENvcnBvcmF0aW9uMQswCQYDVQQGEwJVUzAgFw0yMDEwMTcwMDAwMDBaGA85OTk5\n"
    "MTIzMTIzNTk1OVowZDEbMBkGA1UEBRMSNDE0MzFENDgwRkU1RTg3Mjc0MQswCQYD\n"
    "VQQGEwJVUzEbMBkGA1UECgwSTlZJRElBIENvcnBvcmF0aW9uMRswGQYDVQQDDBJH\n"
    "SDEwMCBBMDEgR1NQIEJST00wdjAQBgcqhkjOPQIBBgUrgQQAIgNiAARPUNpuBHp5\n"
    "gerD2eKofoLPOVE7Xckvvxrj+b/vCFuSmg4SiUjBUALphhgqWNYEtepeQv6eR+4t\n"
    "tSGMbMa1HnRLYH3HbHu4WAzaBNsnsT6Um80welkniok45623sZBnb5ejYzBhMA8G\n"
    "A1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgIEMB0GA1UdDgQWBBTPzHFrUzj0\n"
    "etDtUvSant7I+soqTzAfBgNVHSMEGDAWgBQpaMsWLNB3lXKieRAD5p66DMwKlDAK\n"
    "BggqhkjOPQQDAwNoADBlAjEArfqR6WTTScWTej2Ib/Ow0WZDty+pLP8kYmmf8H7a\n"
    "txQabkBkYrd6sqJfw+YSM9RKAjAbl2SG6I0fQ+mbpFMX4bFf7JF0V2ln5phOBGLi\n"
    "0qmpbZ5H3cZkuK1g3xxda6ru4PE=\n"
    "-----END CERTIFICATE-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIICqjCCAi+gAwIBAgIQav5xhPkiMsjfeyQiYXduVjAKBggqhkjOPQQDAzA9MR4w\n"
    "HAYDVQQDDBVOVklESUEgR0gxMDAgSWRlbnRpdHkxGzAZBgNVBAoMEk5WSURJQSBD\n"
    "b3Jwb3JhdGlvbjAgFw0yMjAzMDEwMDAwMDBaGA85OTk5MTIzMTIzNTk1OVowUzEn\n"
    "MCUGA1UEAwweTlZJRElBIEdIMTAwIFByb3Zpc2lvbmVyIElDQSAxMRswGQYDVQQK\n"
    "DBJOVklESUEgQ29ycG9yYXRpb24xCzAJBgNVBAYTAlVTMHYwEAYHKoZIzj0CAQYF\n"
    "K4EEACIDYgAEzUdWqjn1OlXhLfFOKAFTghqG+Q3zF4xgSBbZsUEyWYCC3rKjE9Nn\n"
    "o88ZpBQx85Oo0PkqP2dwoMVNTQMv5cvy9jLaTvSTXZwN2HQHE9u7x7BIYrWi0sG3\n"
    "5q1IJNSOGO5Lo4HbMIHYMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEG\n"
    "MDwGA1UdHwQ1MDMwMaAvoC2GK2h0dHA6Ly9jcmwubmRpcy5udmlkaWEuY29tL2Ny\n"
    "bC9sMi1naDEwMC5jcmwwNwYIKwYBBQUHAQEEKzApMCcGCCsGAQUFBzABhhtodHRw\n"
    "Oi8vb2NzcC5uZGlzLm52aWRpYS5jb20wHQYDVR0OBBYEFCloyxYs0HeVcqJ5EAPm\n"
    "nroMzAqUMB8GA1UdIwQYMBaAFAdCoOsDnIBge6FBYZlNriX3wpseMAoGCCqGSM49\n"
    "BAMDA2kAMGYCMQDK0BCr49DNJ48Yh5wu388bZifDFxAsiUS4U1fGmpJZFhCbODH6\n"
    "mRwcMxp6EOayZuYCMQDYKTyNc2FxWFuhHtdCE3ls4S7SInehdErTZNuhFymc4YOM\n"
    "6VlLWTY/CM+resjjqxQ=\n"
    "-----END CERTIFICATE-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIICijCCAhCgAwIBAgIQTCVe3jvQAb8/SjtgX8qJijAKBggqhkjOPQQDAzA1MSIw\n"
    "IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE\n"
    "SUEwIBcNMjIwMTEyMDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMD0xHjAcBgNVBAMM\n"
    "FU5WSURJQSBHSDEwMCBJZGVudGl0eTEbMBkGA1UECgwSTlZJRElBIENvcnBvcmF0\n"
    "aW9uMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE+pg+tDUuILlZILk5wg22YEJ9Oh6c\n"
    "yPcsv3IvgRWcV4LeZK1pTCoQDIplZ0E4qsLG3G04pxsbMhxbqkiz9pqlTV2rtuVg\n"
    "SmIqnSYkU1jWXsPS9oVLCGE8VRLl1JvqyOxUo4HaMIHXMA8GA1UdEwEB/wQFMAMB\n"
    "Af8wDgYDVR0PAQH/BAQDAgEGMDsGA1UdHwQ0MDIwMKAuoCyGKmh0dHA6Ly9jcmwu\n"
    "bmRpcy5udmlkaWEuY29tL2NybC9sMS1yb290LmNybDA3BggrBgEFBQcBAQQrMCkw\n"
    "JwYIKwYBBQUHMAGGG2h0dHA6Ly9vY3NwLm5kaXMubnZpZGlhLmNvbTAdBgNVHQ4E\n"
    "FgQUB0Kg6wOcgGB7oUFhmU2uJffCmx4wHwYDVR0jBBgwFoAUV4X/g/JjzGV9aLc6\n"
    "W/SNSsv7SV8wCgYIKoZIzj0EAwMDaAAwZQIxAPIQhnveFxYIrPzBqViT2I34SfS4\n"
    "JGWFnk/1UcdmgJmp+7l6rH/C4qxwntYSgeYrlQIwdjQuofHnhd1RL09OBO34566J\n"
    "C9bYAosT/86cCojiGjhLnal9hJOH0nS/lrbaoc5a\n"
    "-----END CERTIFICATE-----\n"
    "-----BEGIN CERTIFICATE-----\n"
    "MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw\n"
    "IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE\n"
    "SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM\n"
    "GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG\n"
    "ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX\n"
    "gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB\n"
    "2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B\n"
    "Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY\n"
    "MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3\n"
    "TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+\n"
    "EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=\n"
    "-----END CERTIFICATE-----"
    ;

#define SPDM_NONCE_OFFSET 4 /* GET_MEASUREMENTS request: version, code, param1, param2, nonce */
#define NONCE_LEN 32

/* ---------------------------------------------------------------------------------------- */
/* payload pieces                                                                           */

/* nvtrust's certificate field: the chain NVML returned, leaf first, with its last (root)
 * certificate dropped and nvtrust's bundled device root appended, each re-encoded as PEM,
 * concatenated, then base64. Appends the base64 text to out. */
static int cert_chain_b64(const uint8_t *pem, size_t len, buf_t *out, char *err, size_t errlen)
{
    STACK_OF(X509) *certs = NULL;
    int e = pem_chain_read((const char *)pem, len, NV_MAX_CHAIN_CERTS, &certs);
    if (e == PEM_CHAIN_EMPTY) {
        snprintf(err, errlen, "GPU certificate chain is empty");
        return -1;
    }
    if (e != PEM_CHAIN_OK && e != PEM_CHAIN_NOMEM) {
        /* a damaged certificate must not silently shorten the chain */
        snprintf(err, errlen, "GPU certificate chain: %s", pem_chain_strerror(e));
        return -1;
    }
    int rc = -1, n = certs ? sk_X509_num(certs) : 0;
    BIO *mem = BIO_new(BIO_s_mem());
    X509 *root_cert = nv_device_root();
    if (!certs || !mem || !root_cert)
        goto oom;
    if (n < 2) {
        snprintf(err, errlen, "GPU certificate chain has %d certificate(s), expected a chain", n);
        goto done;
    }
    for (int i = 0; i + 1 < n; i++)
        if (!PEM_write_bio_X509(mem, sk_X509_value(certs, i)))
            goto oom;
    if (!PEM_write_bio_X509(mem, root_cert))
        goto oom;
    char *text;
    long tlen = BIO_get_mem_data(mem, &text);
    if (tlen <= 0 || buf_reserve(out, b64_encoded_len((size_t)tlen) + 1))
        goto oom;
    b64_encode(out->data + out->len, (const uint8_t *)text, (size_t)tlen);
    out->len += b64_encoded_len((size_t)tlen);
    rc = 0;
    goto done;
oom:
    ERR_clear_error();
    snprintf(err, errlen, "out of memory while encoding the GPU certificate chain");
done:
    sk_X509_pop_free(certs, X509_free);
    X509_free(root_cert);
    BIO_free(mem);
    return rc;
}

/* Appends one evidence_list item, key order as nvtrust: certificate, then evidence. */
static int append_item(buf_t *out, int first, const uint8_t *report, size_t report_len,
                       const uint8_t *chain, size_t chain_len, char *err, size_t errlen)
{
    if (buf_puts(out, first ? "{\"certificate\": \"" : ", {\"certificate\": \""))
        goto oom;
    if (cert_chain_b64(chain, chain_len, out, err, errlen))
        return -1;
    if (buf_puts(out, "\", \"evidence\": \"") || buf_reserve(out, b64_encoded_len(report_len) + 1))
        goto oom;
    b64_encode(out->data + out->len, report, report_len);
    out->len += b64_encoded_len(report_len);
    if (buf_puts(out, "\"}"))
        goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory while building the GPU evidence");
    return -1;
}

static const char *arch_name(unsigned arch)
{
    switch (arch) {
    case NVML_DEVICE_ARCH_HOPPER: return "HOPPER";
    case NVML_DEVICE_ARCH_BLACKWELL: return "BLACKWELL";
    default: return NULL;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* process-wide gate and helper-thread jobs                                                 */

enum { JOB_PROBE = 1, JOB_COLLECT };

typedef struct gpu_job {
    int kind;
    int refs;  /* the collector and the helper; guarded by g_mu, last one frees */
    int done;
    uint8_t nonce[NONCE_LEN];
    int rc;
    unsigned count;       /* probe: GPUs seen */
    char cc_note[160];    /* probe: CC state in words, or why it is refused */
    int cc_refused;
    buf_t items;          /* collect: evidence_list items */
    const char *arch;     /* collect: payload arch */
    char err[256];
} gpu_job_t;

struct gpu_source {
    int mode; /* resolved: GPU_MODE_NVML | CANNED | NONE */
    int allow_cc_off;
    unsigned timeout_ms;
    /* nvml */
    nvml_lib_t lib;
    int nvml_inited;      /* touched by the helper thread only, then by free after join */
    pthread_t helper;
    int helper_started;
    int helper_busy;      /* running a job (guarded by g_mu) */
    int stopping;         /* guarded by g_mu */
    int orphaned;         /* free() ran while the helper was stuck: it frees the source */
    gpu_job_t *posted;    /* guarded by g_mu */
    /* canned */
    buf_t canned_items;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
/* Set from submission until the helper finishes the NVML work, even when the submitter gave
 * up: one NVML collection at a time, process-wide. */
static int g_busy;

static void gate_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cv, &a);
    pthread_condattr_destroy(&a);
}

static void job_unref_locked(gpu_job_t *j)
{
    if (--j->refs == 0) {
        buf_free(&j->items);
        free(j);
    }
}

static void nvml_err(const gpu_source_t *g, char *err, size_t errlen, const char *call, int gpu,
                     nvmlReturn_t rc)
{
    if (gpu >= 0)
        snprintf(err, errlen, "NVML %s failed on GPU %d: %s (%d)", call, gpu,
                 nvml_lib_strerror(&g->lib, rc), rc);
    else
        snprintf(err, errlen, "NVML %s failed: %s (%d)", call, nvml_lib_strerror(&g->lib, rc), rc);
}

/* CC state check. 0 = acceptable, 1 = CC off/devtools (note says why), -1 = NVML error. */
static int check_cc(gpu_source_t *g, char *note, size_t notelen, char *err, size_t errlen)
{
    nvmlConfComputeSystemState_t st;
    memset(&st, 0, sizeof(st));
    nvmlReturn_t rc = g->lib.cc_get_state(&st);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlSystemGetConfComputeState", -1, rc);
        return -1;
    }
    unsigned multi = NVML_CC_SYSTEM_MULTIGPU_NONE;
    if (g->lib.cc_get_settings) {
        nvmlSystemConfComputeSettings_v1_t s;
        memset(&s, 0, sizeof(s));
        s.version = nvmlSystemConfComputeSettings_v1;
        if (g->lib.cc_get_settings(&s) == NVML_SUCCESS)
            multi = s.multiGpuMode; /* older drivers: not supported, stays NONE */
    }
    /* Protected-PCIe (multi-GPU) systems run with the per-GPU CC feature off. */
    int on = st.ccFeature == NVML_CC_SYSTEM_FEATURE_ENABLED ||
             multi == NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE;
    int devtools = st.devToolsMode != NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF;
    snprintf(note, notelen, "cc feature %u, devtools %u, environment %u, multi-GPU mode %u",
             st.ccFeature, st.devToolsMode, st.environment, multi);
    if (!on || devtools) {
        snprintf(note, notelen, "GPU confidential computing is %s (cc feature %u, devtools %u, "
                 "multi-GPU mode %u)", on ? "in devtools mode" : "off", st.ccFeature,
                 st.devToolsMode, multi);
        return 1;
    }
    return 0;
}

static int ensure_init(gpu_source_t *g, char *err, size_t errlen)
{
    if (g->nvml_inited)
        return 0;
    nvmlReturn_t rc = g->lib.init();
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlInit_v2", -1, rc);
        return -1;
    }
    g->nvml_inited = 1;
    return 0;
}

static void run_probe(gpu_source_t *g, gpu_job_t *j)
{
    j->rc = -1;
    if (ensure_init(g, j->err, sizeof(j->err)))
        return;
    unsigned n = 0;
    nvmlReturn_t rc = g->lib.device_get_count(&n);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, j->err, sizeof(j->err), "nvmlDeviceGetCount_v2", -1, rc);
        return;
    }
    j->count = n;
    if (n > 0) {
        int cc = check_cc(g, j->cc_note, sizeof(j->cc_note), j->err, sizeof(j->err));
        if (cc < 0)
            return;
        j->cc_refused = cc == 1;
    }
    j->rc = 0;
}

static void run_collect(gpu_source_t *g, gpu_job_t *j)
{
    char *err = j->err;
    size_t errlen = sizeof(j->err);
    nvmlConfComputeGpuCertificate_t *cert = NULL;
    nvmlConfComputeGpuAttestationReport_t *rep = NULL;
    j->rc = -1;
    if (ensure_init(g, err, errlen))
        return;
    unsigned n = 0;
    nvmlReturn_t rc = g->lib.device_get_count(&n);
    if (rc != NVML_SUCCESS) {
        nvml_err(g, err, errlen, "nvmlDeviceGetCount_v2", -1, rc);
        return;
    }
    if (n == 0) {
        snprintf(err, errlen, "No GPU evidence found: NVML reports no GPU");
        return;
    }
    char note[160];
    int cc = check_cc(g, note, sizeof(note), err, errlen);
    if (cc < 0)
        return;
    if (cc == 1 && !g->allow_cc_off) {
        snprintf(err, errlen, "%s; refusing its evidence", note);
        return;
    }
    cert = malloc(sizeof(*cert));
    rep = malloc(sizeof(*rep));
    if (!cert || !rep) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < n; i++) {
        nvmlDevice_t dev = NULL;
        if ((rc = g->lib.device_get_handle_by_index(i, &dev)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetHandleByIndex_v2", (int)i, rc);
            goto out;
        }
        nvmlDeviceArchitecture_t arch = 0;
        if ((rc = g->lib.device_get_architecture(dev, &arch)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetArchitecture", (int)i, rc);
            goto out;
        }
        const char *an = arch_name(arch);
        if (!an) {
            snprintf(err, errlen, "GPU %u has architecture %u, which has no CC attestation", i, arch);
            goto out;
        }
        if (j->arch && strcmp(j->arch, an) != 0) {
            snprintf(err, errlen, "GPUs of different architectures (%s, %s)", j->arch, an);
            goto out;
        }
        j->arch = an;

        memset(cert, 0, sizeof(*cert));
        if ((rc = g->lib.cc_get_certificate(dev, cert)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetConfComputeGpuCertificate", (int)i, rc);
            goto out;
        }
        if (cert->attestationCertChainSize == 0 ||
            cert->attestationCertChainSize > sizeof(cert->attestationCertChain)) {
            snprintf(err, errlen, "GPU %u: NVML returned an attestation certificate chain size of "
                     "%u (buffer %zu)", i, cert->attestationCertChainSize,
                     sizeof(cert->attestationCertChain));
            goto out;
        }

        memset(rep, 0, sizeof(*rep));
        memcpy(rep->nonce, j->nonce, NONCE_LEN);
        if ((rc = g->lib.cc_get_attestation_report(dev, rep)) != NVML_SUCCESS) {
            nvml_err(g, err, errlen, "nvmlDeviceGetConfComputeGpuAttestationReport", (int)i, rc);
            goto out;
        }
        if (rep->attestationReportSize < SPDM_NONCE_OFFSET + NONCE_LEN ||
            rep->attestationReportSize > sizeof(rep->attestationReport)) {
            snprintf(err, errlen, "GPU %u: NVML returned an attestation report size of %u "
                     "(buffer %zu)", i, rep->attestationReportSize, sizeof(rep->attestationReport));
            goto out;
        }
        if (memcmp(rep->attestationReport + SPDM_NONCE_OFFSET, j->nonce, NONCE_LEN) != 0) {
            snprintf(err, errlen, "GPU %u: attestation report does not carry the request nonce", i);
            goto out;
        }
        if (append_item(&j->items, i == 0, rep->attestationReport, rep->attestationReportSize,
                        cert->attestationCertChain, cert->attestationCertChainSize, err, errlen))
            goto out;
    }
    j->rc = 0;
out:
    free(cert);
    free(rep);
}

static void source_release(gpu_source_t *g)
{
    if (g->nvml_inited && g->lib.shutdown)
        g->lib.shutdown(); /* errors ignored, as nvtrust does */
    g->nvml_inited = 0;
    nvml_lib_close(&g->lib);
    buf_free(&g->canned_items);
    free(g);
}

static void *helper_main(void *arg)
{
    gpu_source_t *g = arg;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!g->posted && !g->stopping)
            pthread_cond_wait(&g_cv, &g_mu);
        if (!g->posted)
            break;
        gpu_job_t *j = g->posted;
        g->posted = NULL;
        g->helper_busy = 1;
        pthread_mutex_unlock(&g_mu);

        if (j->kind == JOB_PROBE)
            run_probe(g, j);
        else
            run_collect(g, j);

        pthread_mutex_lock(&g_mu);
        j->done = 1;
        g->helper_busy = 0;
        g_busy = 0;
        job_unref_locked(j);
        pthread_cond_broadcast(&g_cv);
    }
    int orphaned = g->orphaned;
    pthread_mutex_unlock(&g_mu);
    if (orphaned)
        source_release(g);
    return NULL;
}

static void deadline_after(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Runs one job on g's helper within g->timeout_ms. Returns the job (caller unrefs under
 * g_mu) or NULL with err set on timeout/busy/OOM. */
static gpu_job_t *submit(gpu_source_t *g, int kind, const uint8_t *nonce, char *err, size_t errlen)
{
    struct timespec dl;
    deadline_after(&dl, g->timeout_ms);
    gpu_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->kind = kind;
    j->refs = 2;
    if (nonce)
        memcpy(j->nonce, nonce, NONCE_LEN);
    pthread_mutex_lock(&g_mu);
    while (g_busy) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT && g_busy) {
            pthread_mutex_unlock(&g_mu);
            free(j);
            snprintf(err, errlen, "GPU evidence busy: a previous NVML call has not returned "
                     "within %u ms", g->timeout_ms);
            return NULL;
        }
    }
    g_busy = 1;
    g->posted = j;
    pthread_cond_broadcast(&g_cv);
    while (!j->done) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT && !j->done) {
            if (g->posted == j) { /* helper never picked it up: withdraw it */
                g->posted = NULL;
                g_busy = 0;
                j->refs--;
                pthread_cond_broadcast(&g_cv);
            }
            job_unref_locked(j);
            pthread_mutex_unlock(&g_mu);
            snprintf(err, errlen, "NVML did not answer within %u ms", g->timeout_ms);
            LOG_WARN("gpu: NVML did not answer within %u ms; its helper thread stays busy until "
                     "the call returns", g->timeout_ms);
            return NULL;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return j;
}

static void job_release(gpu_job_t *j)
{
    pthread_mutex_lock(&g_mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&g_mu);
}

/* ---------------------------------------------------------------------------------------- */
/* public API                                                                               */

int gpu_mode_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcasecmp(s, "auto"))
        return GPU_MODE_AUTO;
    if (!strcasecmp(s, "nvml"))
        return GPU_MODE_NVML;
    if (!strcasecmp(s, "canned"))
        return GPU_MODE_CANNED;
    if (!strcasecmp(s, "none"))
        return GPU_MODE_NONE;
    return -1;
}

static int canned_build(gpu_source_t *g, char *err, size_t errlen)
{
    uint8_t report[sizeof(canned_report_hex) / 2];
    long n = hex_decode(report, sizeof(report), canned_report_hex, strlen(canned_report_hex));
    if (n <= 0) {
        snprintf(err, errlen, "canned GPU report is malformed");
        return -1;
    }
    return append_item(&g->canned_items, 1, report, (size_t)n,
                       (const uint8_t *)canned_cert_chain_pem, strlen(canned_cert_chain_pem), err,
                       errlen);
}

static int helper_start(gpu_source_t *g, char *err, size_t errlen)
{
    int e = pthread_create(&g->helper, NULL, helper_main, g);
    if (e) {
        snprintf(err, errlen, "cannot start the NVML helper thread: %s", strerror(e));
        return -1;
    }
    g->helper_started = 1;
    return 0;
}

gpu_source_t *gpu_source_new(const gpu_config_t *cfg, char *err, size_t errlen)
{
    pthread_once(&g_once, gate_init);
    gpu_source_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->allow_cc_off = cfg->allow_cc_off;
    g->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : GPU_DEFAULT_TIMEOUT_MS;
    g->mode = cfg->mode;

    switch (cfg->mode) {
    case GPU_MODE_NONE:
        LOG_INFO("gpu: evidence mode none (reports carry no GPU evidence)");
        return g;
    case GPU_MODE_CANNED:
        if (canned_build(g, err, errlen)) {
            gpu_source_free(g);
            return NULL;
        }
        LOG_WARN("gpu: evidence mode canned: nvtrust's sample Hopper evidence, whose report does "
                 "not carry the request nonce (for tests only)");
        return g;
    case GPU_MODE_AUTO:
    case GPU_MODE_NVML:
        break;
    default:
        snprintf(err, errlen, "unknown GPU evidence mode %d", cfg->mode);
        free(g);
        return NULL;
    }

    int is_auto = cfg->mode == GPU_MODE_AUTO;
    const char *path = (cfg->nvml_path && *cfg->nvml_path) ? cfg->nvml_path : NVML_DEFAULT_LIBRARY;
    char why[256];
    g->mode = GPU_MODE_NVML;
    if (nvml_lib_open(&g->lib, path, why, sizeof(why)) < 0) {
        g->mode = GPU_MODE_NONE;
        goto unusable;
    }
    if (helper_start(g, why, sizeof(why)) < 0) {
        nvml_lib_close(&g->lib);
        g->mode = GPU_MODE_NONE;
        goto unusable;
    }
    gpu_job_t *j = submit(g, JOB_PROBE, NULL, why, sizeof(why));
    if (!j)
        goto unusable_free;
    if (j->rc != 0) {
        snprintf(why, sizeof(why), "%s", j->err);
        job_release(j);
        goto unusable_free;
    }
    unsigned count = j->count;
    int refused = j->cc_refused;
    char note[160];
    snprintf(note, sizeof(note), "%s", j->cc_note);
    job_release(j);
    if (count == 0) {
        snprintf(why, sizeof(why), "NVML reports no GPU");
        goto unusable_free;
    }
    if (refused && !g->allow_cc_off) {
        if (!is_auto) {
            snprintf(err, errlen, "%s; set GPU_ALLOW_CC_OFF=1 to serve its evidence anyway", note);
            gpu_source_free(g);
            return NULL;
        }
        LOG_WARN("gpu: %s: reports will fail until it is on (or GPU_ALLOW_CC_OFF=1)", note);
    } else if (refused) {
        LOG_WARN("gpu: %s, served anyway (GPU_ALLOW_CC_OFF)", note);
    }
    LOG_INFO("gpu: evidence mode nvml%s: %u GPU(s) via %s, %s", is_auto ? " (auto)" : "", count,
             path, note);
    return g;

unusable_free:
    /* The helper may be stuck in NVML: free() hands the source over to it in that case. */
    gpu_source_free(g);
    g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->allow_cc_off = cfg->allow_cc_off;
    g->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : GPU_DEFAULT_TIMEOUT_MS;
unusable:
    g->mode = GPU_MODE_NONE;
    if (!is_auto) {
        snprintf(err, errlen, "GPU_EVIDENCE=nvml: %s", why);
        free(g);
        return NULL;
    }
    LOG_INFO("gpu: evidence mode none (auto: %s)", why);
    return g;
}

const char *gpu_source_mode(const gpu_source_t *g)
{
    switch (g->mode) {
    case GPU_MODE_NVML: return "nvml";
    case GPU_MODE_CANNED: return "canned";
    default: return "none";
    }
}

int gpu_source_is_canned(const gpu_source_t *g)
{
    return g && g->mode == GPU_MODE_CANNED;
}

static int payload_append(buf_t *out, const uint8_t nonce[32], const buf_t *items, const char *arch)
{
    char hex[2 * NONCE_LEN + 1];
    hex_encode(hex, nonce, NONCE_LEN);
    size_t mark = out->len;
    if (buf_printf(out, "{\"nonce\": \"%s\", \"evidence_list\": [", hex) ||
        buf_append(out, items->data, items->len) ||
        buf_printf(out, "], \"arch\": \"%s\"}", arch)) {
        out->len = mark;
        if (out->data && out->len < out->cap)
            out->data[out->len] = '\0';
        return -1;
    }
    return 0;
}

int gpu_evidence_collect(gpu_source_t *g, const uint8_t nonce[32], buf_t *payload_json, char *err,
                         size_t errlen)
{
    if (g->mode == GPU_MODE_NONE)
        return 1;
    if (g->mode == GPU_MODE_CANNED) {
        if (payload_append(payload_json, nonce, &g->canned_items, "HOPPER")) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    gpu_job_t *j = submit(g, JOB_COLLECT, nonce, err, errlen);
    if (!j)
        return -1;
    int rc = j->rc;
    if (rc == 0 && payload_append(payload_json, nonce, &j->items, j->arch)) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    } else if (rc != 0) {
        snprintf(err, errlen, "%s", j->err);
        LOG_WARN("gpu: evidence collection failed: %s", j->err);
    }
    job_release(j);
    return rc;
}

void gpu_source_free(gpu_source_t *g)
{
    if (!g)
        return;
    if (g->helper_started) {
        pthread_mutex_lock(&g_mu);
        g->stopping = 1;
        pthread_cond_broadcast(&g_cv);
        if (g->helper_busy || g->posted) {
            /* Stuck inside NVML: the helper releases NVML and the source when it returns. */
            g->orphaned = 1;
            pthread_detach(g->helper);
            pthread_mutex_unlock(&g_mu);
            return;
        }
        pthread_mutex_unlock(&g_mu);
        pthread_join(g->helper, NULL);
    }
    source_release(g);
}
