/* The SIMULATED attestation root: a test CA kept in the repository on purpose, generated once
 * with openssl (P-256, 30 years). It signs the simulated PCK chain and GPU certificate so that
 * simulated reports verify end to end. NOT FOR PRODUCTION: its private key is public. */
#include "attest/sim.h"

const char attest_sim_root_cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICEjCCAbegAwIBAgIUQL3FDER/sihxqi2js0YGzC3q41cwCgYIKoZIzj0EAwIw\n"
    "VTETMBEGA1UECgwKdmxsbS1wcm94eTE+MDwGA1UEAww1dmxsbS1wcm94eSBTSU1V\n"
    "TEFURUQgVERYIFJvb3QgQ0EgLSBOT1QgRk9SIFBST0RVQ1RJT04wIBcNMjYxMTI5\n"
    "MTAxODM0WhgPMjA1NjExMjgxMDE4MzRaMFUxEzARBgNVBAoMCnZsbG0tcHJveHkx\n"
    "PjA8BgNVBAMMNXZsbG0tcHJveHkgU0lNVUxBVEVEIFREWCBSb290IENBIC0gTk9U\n"
    "IEZPUiBQUk9EVUNUSU9OMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZz5FouPh\n"
    "uuuCRoJ8rUTU0hb9ZYoW+b5ZPWFRasrHmHHwi6+g+lFi94kwRkLrTSKMpcXhgl/O\n"
    "zhGIH1WXqUIJiaNjMGEwHQYDVR0OBBYEFO6ztz54h7kl9bf0cA07XenvzhCzMB8G\n"
    "A1UdIwQYMBaAFO6ztz54h7kl9bf0cA07XenvzhCzMA8GA1UdEwEB/wQFMAMBAf8w\n"
    "DgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49BAMCA0kAMEYCIQCdwpGSF7daZUMKsMCA\n"
    "pjBuQ9bppG/gipftPpwsxNDstwIhANIJ5ENqqscBf17NpjWXLvlPsPJXW1br3Bw/\n"
    "39WwIOQJ\n"
    "-----END CERTIFICATE-----\n";

const char attest_sim_root_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgY1oADdF3YNCYu++0\n"
    "TMOfC1Jruc+BQosPahY6t0zmFUGhRANCAARnPkWi4+G664JGgnytRNTSFv1lihb5\n"
    "vlk9YVFqyseYcfCLr6D6UWL3iTBGQutNIoylxeGCX87OEYgfVZepQgmJ\n"
    "-----END PRIVATE KEY-----\n";

/* P-384 leaf for the simulated GPU evidence (its private key was discarded). */
const char attest_sim_gpu_cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICITCCAcagAwIBAgICUTMwCgYIKoZIzj0EAwIwVTETMBEGA1UECgwKdmxsbS1w\n"
    "cm94eTE+MDwGA1UEAww1dmxsbS1wcm94eSBTSU1VTEFURUQgVERYIFJvb3QgQ0Eg\n"
    "LSBOT1QgRk9SIFBST0RVQ1RJT04wIBcNMjYxMTI5MTAxODM0WhgPMjA1NjExMjgx\n"
    "MDE4MzRaMFwxEzARBgNVBAoMCnZsbG0tcHJveHkxRTBDBgNVBAMMPFNJTVVMQVRF\n"
    "RCBOVklESUEgR1BVIERldmljZSBDZXJ0aWZpY2F0ZSAtIE5PVCBGT1IgUFJPRFVD\n"
    "VElPTjB2MBAGByqGSM49AgEGBSuBBAAiA2IABGX3T/TQKAmwwyhrXZjTT86G1vH6\n"
    "DSylSp7xC9mAljaSpZ2b/Dk6CzOvwtE1O4hTCSMTnCUkMAknPR+2lE936rypRd/R\n"
    "vflX/O5BYvVIA8wDXljDJnNeOQGztYwtfAVMXaNgMF4wDAYDVR0TAQH/BAIwADAO\n"
    "BgNVHQ8BAf8EBAMCB4AwHQYDVR0OBBYEFG0pgiZ5P+OaItHg3YV5TNu3HLv3MB8G\n"
    "A1UdIwQYMBaAFO6ztz54h7kl9bf0cA07XenvzhCzMAoGCCqGSM49BAMCA0kAMEYC\n"
    "IQC41xl0/ltmwJEtvsIvApOZxUv5mIB/gevLVyRg2XMRpwIhAIDIKFkryDpzWe/y\n"
    "owT+FgZuXJUL+mTL5np44dMiaiKW\n"
    "-----END CERTIFICATE-----\n";
