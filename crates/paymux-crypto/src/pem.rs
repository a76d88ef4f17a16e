use rustls_pki_types::pem::{self, SectionKind};

use crate::{CryptoError, b64_encode};

/// Every PEM section of `text`, in order, as (kind, DER). Text outside sections is ignored.
pub fn pem_sections(text: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, CryptoError> {
    let mut rest = text;
    let mut out = Vec::new();
    loop {
        match pem::from_buf(&mut rest) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => return Ok(out),
            Err(e) => return Err(CryptoError::Key(format!("bad PEM: {e:?}"))),
        }
    }
}

/// Wraps DER in PEM armour with the given label, 64 characters a line.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = b64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
