//! HTTP API request signatures: `SignedQuery::parse` + `verify` on hostile input, and the
//! signer/verifier round trip on arbitrary parameters.
//!
//! Input layout: a 27-byte header, then fields separated by NUL bytes, each read as (lossy)
//! UTF-8: `query \0 method \0 path \0 body \0 secret \0 key \0 name=value&name=value...`.
//! The header holds the clock (i64 LE), the allowed skew (i64), the offset of the server
//! clock from the signing time (i64), which signature byte to change and how, and whether to
//! sign a body when it is empty. Missing fields are empty.
//!
//! Properties: nothing panics (timestamps and skews are client-chosen i64s); a query built by
//! `signed_query_string` always verifies with the same method, path, body and secret, within
//! the skew; and changing one byte of its signature (other than the case of a hex digit)
//! never verifies.
#![no_main]

use herald_protocol::signing::{signed_query_string, SignatureError, SignedQuery};
use libfuzzer_sys::fuzz_target;

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = bytes.get(at + i).copied().unwrap_or(0);
    }
    i64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    const HEADER: usize = 27;
    let header = &data[..data.len().min(HEADER)];
    let now = i64_at(header, 0);
    let max_skew = i64_at(header, 8);
    let offset = i64_at(header, 16);
    let byte = |i: usize| header.get(i).copied().unwrap_or(0);
    let mut fields = data[header.len()..].split(|&b| b == 0);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let query = next();
    let method = next();
    let path = next();
    let body = next();
    let secret = next();
    let key = next();
    let params_text = next();

    // Hostile query: any outcome but a panic is fine, and errors must render (they are sent
    // back in the 401 body).
    match SignedQuery::parse(&query) {
        Ok(q) => {
            let _ = q.get("info");
            if let Err(e) = q.verify(&method, &path, body.as_bytes(), &secret, now, max_skew) {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // Round trip. Parameters come from the last field, `&`- and `=`-separated, so they can
    // hold any byte but those; the signer escapes whatever a query cannot carry raw.
    let params: Vec<(&str, &str)> = params_text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let with_body = !body.is_empty() || byte(26) & 1 == 1;
    let body_opt = with_body.then_some(body.as_bytes());
    let signed = signed_query_string(&method, &path, &key, &secret, now, body_opt, &params);
    let skew = max_skew.max(0);
    // A server clock anywhere within the allowed skew of the signing time.
    let server_now = if skew == 0 {
        now
    } else {
        now.saturating_add(offset % skew)
    };
    let parsed = SignedQuery::parse(&signed)
        .unwrap_or_else(|e| panic!("signed query {signed:?} does not parse: {e}"));
    assert_eq!(parsed.auth_key, key);
    assert_eq!(parsed.auth_timestamp, now);
    if let Err(e) = parsed.verify(&method, &path, body.as_bytes(), &secret, server_now, skew) {
        // The only legitimate failure: the clock offset saturated out of range.
        assert!(
            matches!(e, SignatureError::TimestampExpired { .. })
                && now.abs_diff(server_now) > skew.unsigned_abs(),
            "signed query {signed:?} failed to verify: {e}"
        );
    }

    // One changed byte of the signature (the last 64 bytes of the query).
    let at = signed.len() - 64 + usize::from(byte(24) % 64);
    let old = signed.as_bytes()[at];
    // Any other ASCII byte; keeps the query valid UTF-8.
    let new = (old ^ (1 + byte(25) % 127)) & 0x7f;
    if new != old && !new.eq_ignore_ascii_case(&old) {
        let mut tampered = signed.clone().into_bytes();
        tampered[at] = new;
        let tampered = String::from_utf8(tampered).expect("ASCII replaced by ASCII");
        if let Ok(q) = SignedQuery::parse(&tampered) {
            assert!(
                q.verify(&method, &path, body.as_bytes(), &secret, now, skew)
                    .is_err(),
                "tampered query {tampered:?} verified"
            );
        }
    }
});
