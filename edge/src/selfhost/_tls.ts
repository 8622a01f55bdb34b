import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { RelayStartError } from "./_errors.ts";

/**
 * Reads and checks `--tls-cert` and `--tls-key` before the relay listens: each runtime reports a
 * bad PEM its own way (Node when the server is made, Bun and Deno from deep inside serve, some
 * only at the first handshake), so the same checks run first, with node:crypto on all three.
 * @throws {RelayStartError} naming the file and what is wrong with it.
 */
export function readTls(certFile: string, keyFile: string): { cert: string; key: string } {
  const cert = readPem(certFile, "--tls-cert", "the certificate");
  const key = readPem(keyFile, "--tls-key", "the private key");
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new RelayStartError(
      `--tls-cert ${certFile} holds no valid certificate: ${(error as Error).message}`,
      "give the PEM file of the certificate chain (-----BEGIN CERTIFICATE-----), the server's certificate first",
    );
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new RelayStartError(
      `--tls-key ${keyFile} holds no valid private key: ${(error as Error).message}`,
      "give the unencrypted PEM private key of the certificate (-----BEGIN PRIVATE KEY-----)",
    );
  }
  let matches = true;
  try {
    matches = certificate.checkPrivateKey(privateKey);
  } catch {
    // A runtime without checkPrivateKey: its TLS stack refuses a mismatch when it starts.
  }
  if (!matches) {
    throw new RelayStartError(
      `--tls-key ${keyFile} is not the private key of the certificate in ${certFile}`,
      "give the key the certificate was issued for (openssl x509 -noout -pubkey -in CERT and openssl pkey -pubout -in KEY print the same key)",
    );
  }
  if (Date.parse(certificate.validTo) < Date.now()) {
    console.warn(`relay | warning: the certificate in ${certFile} expired on ${certificate.validTo}; agents will refuse it`);
  }
  return { cert, key };
}

function readPem(file: string, flag: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    throw new RelayStartError(
      `cannot read ${what} ${file} (${flag}): ${(error as Error).message}`,
      `check the path, and that this user may read it (ls -l ${file})`,
    );
  }
}
