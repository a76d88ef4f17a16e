//! Reading messages: raw synchronous answers (never URL-decoded) and form-encoded notifications
//! (decoded exactly once).

use crate::protocol::Fields;

/// Why a message could not be read into fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("item {0:?} has no '='")]
    NoEquals(String),
    #[error("field {0:?} appears more than once")]
    DuplicateField(String),
    #[error("a '{{' or '[' in the value of {0:?} is never closed")]
    Unclosed(String),
}

/// Parses a raw synchronous answer, `k=v&k=v...` with values not URL-encoded, as the ACP SDK
/// does: split on `&` only outside `{...}` and `[...]` inside a value, and split each item at its
/// first `=`. Nothing is decoded: a `+` in `signature` stays a `+`, CR LF in `signPubKeyCert`
/// stays CR LF.
pub fn parse_answer(body: &str) -> Result<Fields, ParseError> {
    let body = body.strip_suffix("\r\n").or_else(|| body.strip_suffix('\n')).unwrap_or(body);
    if body.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut fields = Fields::new();
    let mut depth: usize = 0;
    let mut start = 0;
    let mut key_end: Option<usize> = None;
    for (i, c) in body.char_indices() {
        match c {
            '=' if key_end.is_none() => key_end = Some(i),
            '{' | '[' if key_end.is_some() => depth += 1,
            '}' | ']' if key_end.is_some() => depth = depth.saturating_sub(1),
            '&' if depth == 0 => {
                insert_item(&mut fields, &body[start..i], key_end.map(|k| k - start))?;
                start = i + 1;
                key_end = None;
            }
            _ => {}
        }
    }
    if depth > 0 {
        let key = key_end.map_or(&body[start..], |k| &body[start..k]);
        return Err(ParseError::Unclosed(key.to_owned()));
    }
    insert_item(&mut fields, &body[start..], key_end.map(|k| k - start))?;
    Ok(fields)
}

fn insert_item(fields: &mut Fields, item: &str, eq: Option<usize>) -> Result<(), ParseError> {
    let eq = eq.ok_or_else(|| ParseError::NoEquals(item.to_owned()))?;
    let (key, value) = (&item[..eq], &item[eq + 1..]);
    if fields.insert(key.to_owned(), value.to_owned()).is_some() {
        return Err(ParseError::DuplicateField(key.to_owned()));
    }
    Ok(())
}

/// Decodes a form-encoded notification body exactly once (`+` is a space, `%XX` a byte). A field
/// given twice is refused: which value was signed would be a guess.
pub fn decode_form(raw: &[u8]) -> Result<Fields, ParseError> {
    if raw.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut out = Fields::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ParseError::DuplicateField(k.into_owned()));
        }
    }
    Ok(out)
}

/// Form-encodes fields for a request body (space as `+`).
pub fn encode_form(fields: &Fields) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Lays fields out as a raw answer (`k=v&...`, nothing encoded), as UnionPay writes them.
pub fn format_answer(fields: &Fields) -> String {
    crate::protocol::join_pairs(fields.iter())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answer_values_keep_plus_slash_equals_and_crlf() {
        let f = parse_answer("a=1&signature=ab+/c==&cert=L1\r\nL2&empty=").unwrap();
        assert_eq!(f["signature"], "ab+/c==");
        assert_eq!(f["cert"], "L1\r\nL2");
        assert_eq!(f["empty"], "");
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn answer_splits_only_outside_braces_and_brackets() {
        let f = parse_answer("reqReserved={a=1&b=2}&x=[{c=3&d=[4&5]}]&customerInfo={p=1}&z=%41")
            .unwrap();
        assert_eq!(f["reqReserved"], "{a=1&b=2}");
        assert_eq!(f["x"], "[{c=3&d=[4&5]}]");
        assert_eq!(f["customerInfo"], "{p=1}");
        assert_eq!(f["z"], "%41", "an answer is never URL-decoded");
    }

    #[test]
    fn malformed_answers_are_refused() {
        assert_eq!(parse_answer(""), Err(ParseError::Empty));
        assert_eq!(parse_answer("a=1&b"), Err(ParseError::NoEquals("b".into())));
        assert_eq!(parse_answer("a=1&a=2"), Err(ParseError::DuplicateField("a".into())));
        assert_eq!(parse_answer("a={1&b=2"), Err(ParseError::Unclosed("a".into())));
    }

    #[test]
    fn notifications_are_form_decoded_once() {
        let f = decode_form(b"signature=ab%2B%2Fc%3D%3D&x=%2541&s=a+b&cert=L1%0D%0AL2").unwrap();
        assert_eq!(f["signature"], "ab+/c==");
        assert_eq!(f["x"], "%41");
        assert_eq!(f["s"], "a b");
        assert_eq!(f["cert"], "L1\r\nL2");
        assert_eq!(decode_form(b"a=1&a=1"), Err(ParseError::DuplicateField("a".into())));
        assert_eq!(decode_form(&encode_form(&f).into_bytes()).unwrap(), f);
    }
}
